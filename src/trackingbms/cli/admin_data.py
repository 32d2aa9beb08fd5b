"""Commands: ``trackingbms admin backup`` (and the other data commands for integrations).

Backup uses SQLite's online backup API (``sqlite3.Connection.backup``): it copies a consistent snapshot
while the server keeps writing, page batch by page batch, which copying the file (and its WAL) would not.
PostgreSQL is backed up with its own ``pg_dump``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from trackingbms.cli.server import DataDirOpt, DbOpt, _say_database, _settings, admin_app, sqlite_path

EXIT_ERROR = 1
EXIT_USAGE = 2
BACKUP_PAGES_PER_STEP = 2048  # ~8 MB at 4 KiB pages: the server gets the write lock back between steps


def _fail(msg: str, code: int = EXIT_ERROR) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def backup_sqlite(source: Path, out: Path) -> int:
    """Copy ``source`` to ``out`` with SQLite's online backup, check it, return its size in bytes."""
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)  # read-only: never creates an empty one
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=BACKUP_PAGES_PER_STEP)
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"the copy fails its integrity check: {check}")
        finally:
            dst.close()
    finally:
        src.close()
    tmp.replace(out)  # the backup file appears only once complete and checked
    return out.stat().st_size


@admin_app.command("backup")
def backup(
    out: Annotated[Path, typer.Argument(help="file to write, e.g. trackingbms-2026-11-30.db")],
    force: Annotated[bool, typer.Option("--force", help="overwrite OUT if it exists")] = False,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Back up the SQLite database while the server runs (a consistent snapshot, integrity-checked).

    Restore: stop the server, put the file in place of the database (removing its -wal and -shm files),
    start the server. PostgreSQL: use pg_dump / pg_restore (see the README).
    """
    url = _settings(database_url, data_dir).resolved_database_url()
    source = sqlite_path(url)
    if source is None:
        where = url.split("@")[-1]
        raise _fail(
            f"the database is not SQLite ({where}): back up PostgreSQL with "
            "`pg_dump -Fc -f trackingbms.dump DBNAME` (restore: `pg_restore -d DBNAME trackingbms.dump`)",
            EXIT_USAGE,
        )
    if not source.is_file():
        raise _fail(f"no database at {source} (set --data-dir or --database-url)")
    if out.exists() and not force:
        raise _fail(f"{out} exists; give --force to overwrite it", EXIT_USAGE)
    if out.resolve() == source.resolve():
        raise _fail("OUT is the database itself", EXIT_USAGE)
    try:
        size = backup_sqlite(source, out)
    except (sqlite3.Error, OSError) as exc:
        raise _fail(f"backup of {source} failed: {exc}") from None
    typer.echo(f"backed up {source} to {out} ({size / 1048576:.1f} MiB, integrity ok)")


@admin_app.command("export")
def export(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant name")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory of the dataset (created)")],
    fmt: Annotated[
        str, typer.Option("--format", help="parquet (a dataset partitioned by battery and day)")
    ] = "parquet",
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 start; default: everything")] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="RFC 3339 end (exclusive); default: everything stored, up to now + 5 min"),
    ] = None,
    battery: Annotated[
        list[str] | None, typer.Option("--battery", "-b", help="only this battery (repeat)")
    ] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a tenant's samples as a Parquet dataset: OUT/battery_id=<id>/day=<YYYY-MM-DD>/part-0.parquet.

    Read it with pandas.read_parquet(OUT) or DuckDB: SELECT * FROM read_parquet('OUT/**/*.parquet',
    hive_partitioning = true). A day already exported is replaced, never duplicated.
    """
    import asyncio

    from trackingbms.server import parquet

    if fmt != "parquet":
        raise _fail(f"unknown --format {fmt!r}: parquet (CSV is per battery: GET …/export.csv)", EXIT_USAGE)
    try:
        parquet.require()
    except parquet.ParquetUnavailable as exc:
        raise _fail(str(exc)) from None
    from_ms, to_ms = _span(from_, to)
    url = _settings(database_url, data_dir).resolved_database_url()
    _say_database(url)
    source = sqlite_path(url)
    if source is not None and not source.is_file():
        raise _fail(f"no database at {source} (set --data-dir or --database-url)")

    async def go() -> dict[str, object]:
        from trackingbms.server import provisioning as p
        from trackingbms.server.store.packing import unpack

        async with p.open_store(url) as store:
            ts = store.tenant(await store.tenant_by_name(tenant))
            return await parquet.export_dataset(ts, out, from_ms, to_ms, unpack, battery)

    from trackingbms.server.store import NotFound

    try:
        result = asyncio.run(go())
    except NotFound as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc}") from None
    n, b, f = result["samples"], result["batteries"], result["files"]
    typer.echo(
        f"{n} sample{'' if n == 1 else 's'} of {b} batter{'y' if b == 1 else 'ies'} in {f} "
        f"file{'' if f == 1 else 's'} under {out}"
    )


def _span(from_: str | None, to: str | None) -> tuple[int, int]:
    from datetime import UTC, datetime

    def ms(text: str, name: str) -> int:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--{name} must be an RFC 3339 time, e.g. 2026-11-24T00:00:00Z", EXIT_USAGE) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)

    from trackingbms.server.store.packing import MAX_FUTURE_SKEW_MS

    # ingest accepts samples stamped up to MAX_FUTURE_SKEW_MS ahead (a gateway clock running fast):
    # "everything" must include them, as the HTTP export does (api/history.py EXPORT_AHEAD_MS)
    to_ms = ms(to, "to") if to else int(datetime.now(UTC).timestamp() * 1000) + MAX_FUTURE_SKEW_MS + 1
    from_ms = ms(from_, "from") if from_ else 0
    if from_ms >= to_ms:
        raise _fail("--from must be before --to", EXIT_USAGE)
    return from_ms, to_ms


def _tokens_run(
    coro_fn: Callable[[Any], Awaitable[Any]], database_url: str | None, data_dir: Path | None
) -> Any:
    import asyncio

    from trackingbms.server import provisioning as p
    from trackingbms.server.store import Conflict, NotFound

    url = _settings(database_url, data_dir).resolved_database_url()
    source = sqlite_path(url)
    if source is not None and not source.is_file():
        raise _fail(f"no database at {source} (set --data-dir or --database-url)")

    async def go() -> Any:
        async with p.open_store(url) as store:
            return await coro_fn(store)

    try:
        return asyncio.run(go())
    except (NotFound, Conflict, ValueError) as exc:
        raise _fail(str(exc)) from None


def _when(ms: int | None) -> str:
    from datetime import UTC, datetime

    return "never" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@admin_app.command("create-api-token")
def create_api_token(
    email: Annotated[str, typer.Argument(help="the user the token acts for")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant name")],
    name: Annotated[str, typer.Option("--name", help="what it is for, e.g. grafana")],
    scope: Annotated[str, typer.Option("--scope", help="read or read-write")] = "read",
    expires_days: Annotated[int, typer.Option("--expires-days", help="1 to 366")] = 90,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create a personal access token for an integration; printed once (stored hashed)."""
    import json

    async def go(store: Any) -> Any:
        ts = store.tenant(await store.tenant_by_name(tenant))
        return await ts.create_api_token(email, name, scope, expires_days)

    r = _tokens_run(go, database_url, data_dir)
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(
        f"API token {r['id']} ({r['name']}, {r['scope']}) for {r['user']}, expires {_when(r['expires_ms'])}"
    )
    typer.echo(f"token (shown once, keep it): {r['token']}")


@admin_app.command("list-api-tokens")
def list_api_tokens(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant name")],
    user: Annotated[str | None, typer.Option("--user", help="only this user's tokens")] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List a tenant's API tokens (never the tokens themselves)."""
    import json

    async def go(store: Any) -> Any:
        return await store.tenant(await store.tenant_by_name(tenant)).list_api_tokens(user)

    rows = _tokens_run(go, database_url, data_dir)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['id']:>5}  {r['status']:<8} {r['scope']:<10} {r['user']:<30} {r['name']:<20} "
            f"expires {_when(r['expires_ms'])}, last used {_when(r['last_used_ms'])}"
        )
    if not rows:
        typer.echo("no API tokens")


@admin_app.command("revoke-api-token")
def revoke_api_token(
    token_id: Annotated[int, typer.Argument(help="the token's id (list-api-tokens)")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant name")],
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke an API token: requests with it get 401 from now on."""

    async def go(store: Any) -> Any:
        return await store.tenant(await store.tenant_by_name(tenant)).revoke_api_token(token_id)

    r = _tokens_run(go, database_url, data_dir)
    typer.echo(f"revoked API token {r['id']} ({r['name']}) of {r['user']}")
