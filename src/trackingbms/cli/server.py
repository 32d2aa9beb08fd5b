"""Commands: ``trackingbms server`` (run, migrate) and ``trackingbms admin`` (provisioning)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from trackingbms.cli.app import app

server_app = typer.Typer(help="The collection server: ingest, API, dashboard.", no_args_is_help=False)
admin_app = typer.Typer(help="Provision tenants, users, sites, batteries and devices.", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(admin_app, name="admin")

DbOpt = Annotated[
    str | None,
    typer.Option("--database-url", envvar="TRACKINGBMS_DATABASE_URL", help="default: SQLite in --data-dir"),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", envvar="TRACKINGBMS_DATA_DIR", help="where the SQLite file lives")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant name")]
ChemistryOpt = Annotated[
    str | None,
    typer.Option(
        "--chemistry", help="lfp, nmc or lto: picks the cell-voltage alarm thresholds (default: LFP's)"
    ),
]
CapacityOpt = Annotated[
    float | None,
    typer.Option(
        "--capacity-ah", help="rated capacity (Ah): what SOH is measured against (default: the BMS's)"
    ),
]


def _settings(database_url: str | None, data_dir: Path | None, **kw: Any) -> Any:
    """The server's settings; each invalid one (environment, file, option) named in a line, exit 2."""
    from pydantic import ValidationError

    from trackingbms.server.settings import Settings

    try:
        return Settings.load(kw.pop("config", None), database_url=database_url, data_dir=data_dir, **kw)
    except ValidationError as e:
        for err in e.errors():
            name = ".".join(str(part) for part in err["loc"]) or "settings"
            msg = err["msg"].removeprefix("Value error, ")
            typer.echo(f"invalid setting {name} (TRACKINGBMS_{name.upper()}): {msg}", err=True)
        raise typer.Exit(2) from None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for another backend."""
    if not url.startswith("sqlite"):
        return None
    return Path(url.split(":///", 1)[1]) if ":///" in url else None


def _say_database(url: str) -> None:
    """Name the database on stderr: a token refused by a server on another database than the admin
    commands used is the commonest first-day mistake; a SQLite file about to be created says so (a
    mistyped --data-dir would otherwise show only as "no tenant")."""
    from trackingbms.server.db import describe_url

    path = sqlite_path(url)
    new = path is not None and not path.exists()
    typer.echo(
        f"database: {describe_url(url)}{' (new: none there yet, creating it)' if new else ''}", err=True
    )


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """Turn the usual database mistakes (no such database, server down, driver missing) into one or two
    lines and exit 2; anything else keeps its traceback (a bug to report)."""
    from trackingbms.server.db import explain_database_error

    try:
        yield
    except Exception as e:
        msg = explain_database_error(e, url)
        if msg is None:
            raise
        typer.echo(msg, err=True)
        raise typer.Exit(2) from None


@server_app.callback(invoke_without_command=True)
def server(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="address to listen on (default 127.0.0.1: this machine only)")
    ] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="port (default 8000)")] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="settings TOML file")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning")] = None,
) -> None:
    """Run the collection server (applies migrations at start)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"database_url": database_url, "data_dir": data_dir, "config": config}
        return
    import uvicorn

    from trackingbms.server.app import configure_logging, create_app
    from trackingbms.server.db import check_database
    from trackingbms.server.guard import uvicorn_options

    settings = _settings(database_url, data_dir, config=config, host=host, port=port, log_level=log_level)
    url = settings.resolved_database_url()
    _say_database(url)
    with _database_errors(url):
        import asyncio

        asyncio.run(check_database(url))
    configure_logging(settings.log_level)
    import gc

    # a batch of 5,000 samples is ~150,000 short-lived objects: collecting every 700 allocations (the
    # default) walks the whole heap far too often; freeze what exists at start, collect less often
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,  # in-flight batches finish and commit before exit
        **uvicorn_options(settings),
    )


@server_app.command()
def migrate(ctx: typer.Context, database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply database migrations and exit."""
    from trackingbms.server.db import describe_url, migrate_url

    parent = ctx.obj or {}
    settings = _settings(
        database_url or parent.get("database_url"),
        data_dir or parent.get("data_dir"),
        config=parent.get("config"),
    )
    url = settings.resolved_database_url()
    _say_database(url)
    with _database_errors(url):
        migrate_url(url)
    typer.echo(f"migrated {describe_url(url)}")


@server_app.command()
def compact(
    ctx: typer.Context,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact samples older than the hot window (setting compact_hot_window_s) into compressed blocks now
    (the server also does this every compact_interval_s)."""
    from trackingbms.server import provisioning as p

    parent = ctx.obj or {}
    settings = _settings(
        database_url or parent.get("database_url"),
        data_dir or parent.get("data_dir"),
        config=parent.get("config"),
    )
    window_ms = int(settings.compact_hot_window_s * 1000)
    _run(
        lambda url: p.compact(url, window_ms),
        settings.resolved_database_url(),
        None,
        as_json,
        lambda r: (
            f"compacted {r['samples']} samples into {r['blocks']} blocks"
            + (f" ({r['duplicates']} duplicates dropped)" if r["duplicates"] else "")
        ),
    )


def _run(coro_fn: Any, database_url: str | None, data_dir: Path | None, as_json: bool, text: Any) -> None:
    from trackingbms.server.store import Conflict, NotFound

    url = _settings(database_url, data_dir).resolved_database_url()
    _say_database(url)
    try:
        with _database_errors(url):
            import asyncio

            result = asyncio.run(coro_fn(url))
    except (Conflict, NotFound, ValueError) as e:
        if as_json:
            typer.echo(json.dumps({"error": str(e)}))
        else:
            typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(text(result))


RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="the tenant's home region (e.g. paris): its device tokens name it, and other regions send its "
        "devices and users there (docs/scaling.md)",
    ),
]


@admin_app.command("create-tenant")
def create_tenant(
    name: str,
    region: RegionOpt = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant (an organisation: its sites, batteries, devices and users)."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.create_tenant(url, name, region),
        database_url,
        data_dir,
        as_json,
        lambda r: f"tenant {r['name']}" + (f" (home region {r['region']})" if r.get("region") else ""),
    )


@admin_app.command("tenant")
def tenant_settings(
    name: str,
    region: RegionOpt = None,
    clear_region: Annotated[
        bool, typer.Option("--clear-region", help="forget the home region (this deployment's region)")
    ] = False,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a tenant's home region. On the database of the region it leaves, this makes that region answer its
    devices and users with 421 and the new region's URL (within `directory_sync_s`); moving its data is a
    separate export and import."""
    from trackingbms.server import provisioning as p

    if region is None and not clear_region:
        raise typer.BadParameter("give --region NAME (or --clear-region)")
    _run(
        lambda url: p.set_tenant_region(url, name, None if clear_region else region),
        database_url,
        data_dir,
        as_json,
        lambda r: f"tenant {r['tenant']}: home region {r['region'] or '(this deployment)'}",
    )


@admin_app.command("create-user")
def create_user(
    email: str,
    tenant: TenantOpt,
    role: Annotated[str, typer.Option(help="admin, operator or viewer")] = "viewer",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user who logs in to the dashboard / API."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.create_user(url, tenant, email, password, role),
        database_url,
        data_dir,
        as_json,
        lambda r: f"user {r['email']} ({r['role']})",
    )


@admin_app.command("create-site")
def create_site(
    name: str,
    tenant: TenantOpt,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a site (a place batteries are at)."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.create_site(url, tenant, name),
        database_url,
        data_dir,
        as_json,
        lambda r: f"site {r['name']} (site_id {r['site_id']})",
    )


@admin_app.command("create-battery")
def create_battery(
    battery_id: str,
    tenant: TenantOpt,
    site: Annotated[str, typer.Option(help="site name")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    device: Annotated[str | None, typer.Option(help="the device (gateway) that reports it")] = None,
    poll_interval_s: Annotated[float | None, typer.Option(help="expected seconds between samples")] = None,
    chemistry: ChemistryOpt = None,
    capacity_ah: CapacityOpt = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a battery pack under a site, optionally assigned to a device."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.create_battery(
            url,
            tenant,
            site,
            battery_id,
            name=name,
            device=device,
            poll_interval_s=poll_interval_s,
            chemistry=chemistry,
            rated_capacity_ah=capacity_ah,
        ),
        database_url,
        data_dir,
        as_json,
        lambda r: (
            f"battery {r['battery_id']} at site {r['site_id']} reported by {r['device_id'] or '(no device)'}"
            + _profile_words(r)
        ),
    )


@admin_app.command("battery-profile")
def battery_profile(
    battery_id: str,
    tenant: TenantOpt,
    chemistry: ChemistryOpt = None,
    capacity_ah: CapacityOpt = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a battery's chemistry (its built-in cell-voltage alarm thresholds and the health engine's voltage
    curve) and rated capacity (what SOH is measured against). `--chemistry unset` / `--capacity-ah 0` clear
    them. A running server applies the change within seconds."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.set_battery_profile(url, tenant, battery_id, chemistry, capacity_ah),
        database_url,
        data_dir,
        as_json,
        _profile_line,
    )


def _profile_line(r: dict[str, Any]) -> str:
    chemistry = r["chemistry"].upper() if r["chemistry"] else "not set (LFP thresholds)"
    rated = _ah(r["rated_capacity_ah"]) or "not set (the BMS reading)"
    return f"battery {r['battery_id']}: chemistry {chemistry}, rated capacity {rated}"


def _ah(value: float | None) -> str:
    return f"{value:g} Ah" if value else ""


def _profile_words(r: dict[str, Any]) -> str:
    words = [r["chemistry"].upper()] if r.get("chemistry") else []
    if r.get("rated_capacity_ah"):
        words.append(f"{_ah(r['rated_capacity_ah'])} rated")
    return f" ({', '.join(words)})" if words else ""


@admin_app.command("provision-device")
def provision_device(
    name: str,
    tenant: TenantOpt,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a device (gateway) and print its token, once: it is stored hashed."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.provision_device(url, tenant, name),
        database_url,
        data_dir,
        as_json,
        lambda r: f"device {r['device_id']}\ntoken (shown once, keep it): {r['token']}",
    )


@admin_app.command("revoke-token")
def revoke_token(
    token: Annotated[str | None, typer.Argument(help="the full device or user token")] = None,
    device: Annotated[str | None, typer.Option(help="revoke every token of this device instead")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="tenant of --device")] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token (or all tokens of a device): requests with it get 401 from now on."""
    from trackingbms.server import provisioning as p

    if device:
        if not tenant:
            raise typer.BadParameter("--device needs --tenant")

        async def go(url: str) -> dict[str, Any]:
            return {"revoked": await p.revoke_device_tokens(url, tenant, device)}
    elif token:

        async def go(url: str) -> dict[str, Any]:
            return {"revoked": int(await p.revoke_token(url, token))}
    else:
        raise typer.BadParameter("give a TOKEN or --device")
    _run(go, database_url, data_dir, as_json, lambda r: f"revoked {r['revoked']} token(s)")


@admin_app.command("set-config")
def set_config(
    device: str,
    tenant: TenantOpt,
    config_json: Annotated[
        str, typer.Argument(help='e.g. \'{"heartbeat_interval_s": 30, "batteries": {...}}\'')
    ],
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a device's remote config (poll cadences, heartbeat interval); it gets the next config_version."""
    from trackingbms.server import provisioning as p
    from trackingbms.server.schemas import DeviceConfigIn

    cfg = DeviceConfigIn.model_validate_json(config_json).model_dump(mode="json", exclude_none=True)
    _run(
        lambda url: p.set_device_config(url, tenant, device, cfg),
        database_url,
        data_dir,
        as_json,
        lambda r: f"config_version {r['config_version']} for {device}",
    )


@admin_app.command("set-retention")
def set_retention(
    tenant: str,
    days: Annotated[int, typer.Argument(help="days of raw samples to keep; 0 keeps them forever")],
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep a tenant's raw samples DAYS long (1-minute rollups, which serve long history views, stay)."""
    from trackingbms.server import provisioning as p

    _run(
        lambda url: p.set_retention(url, tenant, days or None),
        database_url,
        data_dir,
        as_json,
        lambda r: (
            f"tenant {tenant}: raw samples kept "
            + (f"{r['retention_days']} days" if r["retention_days"] else "forever")
        ),
    )
