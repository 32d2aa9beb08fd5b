"""Commands: ``trackingbms ingest-worker`` and the MQTT broker side of ``trackingbms admin``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from trackingbms.cli.app import app
from trackingbms.cli.server import DataDirOpt, DbOpt, JsonOpt, TenantOpt, _run, _settings, admin_app

PasswdOpt = Annotated[Path | None, typer.Option("--passwd", help="Mosquitto password_file to update")]
AclOpt = Annotated[Path | None, typer.Option("--acl", help="Mosquitto acl_file to (re)write")]
NatsOpt = Annotated[
    Path | None, typer.Option("--nats-users", help="NATS authorization include file to update")
]


def _need_files(passwd: Path | None, acl: Path | None, nats_users: Path | None) -> None:
    if nats_users is None and (passwd is None or acl is None):
        typer.echo("error: give --passwd and --acl (Mosquitto) and/or --nats-users (NATS)", err=True)
        raise typer.Exit(2)


@app.command("ingest-worker")
def ingest_worker(
    mqtt: Annotated[
        str | None,
        typer.Option(help="consume from Mosquitto: mqtt[s]://worker-user@host:port (shared subscription)"),
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option(help="consume from NATS JetStream: nats://[user@]host:port[,nats://host2:port...]"),
    ] = None,
    mqtt_password: Annotated[
        str | None,
        typer.Option(
            envvar="TRACKINGBMS_MQTT_PASSWORD", help="the worker user's broker password (MQTT or NATS)"
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(help="JetStream stream replicas when creating it")] = 3,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Store batches published by gateways over MQTT / JetStream, acknowledging each after its commit."""
    from trackingbms.server.alarms import AlarmService
    from trackingbms.server.app import configure_logging
    from trackingbms.server.db import make_engine, migrate
    from trackingbms.server.notify import Notifier
    from trackingbms.server.store import Store
    from trackingbms.server.worker import IngestHandler, run_jetstream, run_mqtt

    if bool(mqtt) == bool(nats):
        typer.echo("error: give exactly one of --mqtt URL or --nats URL", err=True)
        raise typer.Exit(2)
    settings = _settings(database_url, data_dir)
    configure_logging(log_level)

    import asyncio

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        engine = make_engine(settings.resolved_database_url())
        alarms = None
        try:
            await migrate(engine)
            store = Store(
                engine,
                default_poll_interval_s=settings.default_poll_interval_s,
                offline_timeout_s=settings.offline_timeout_s,
                online_grace_s=settings.online_grace_s,
            )
            if settings.alarms_enabled:  # the same alarm path as HTTP ingest (docs/alarms.md)
                alarms = AlarmService(
                    store,
                    interval_s=settings.alarm_interval_s,
                    notifier=Notifier(store, group_s=settings.notify_group_s),
                    rules_check_s=settings.rules_check_s,
                    lease_ttl_s=settings.alarm_lease_s,
                )
                alarms.start()
            handler = IngestHandler(
                store,
                settings.max_batch_samples,
                max_future_ms=int(settings.max_clock_skew_s * 1000),
                transport="mqtt" if mqtt else "jetstream",
                alarms=alarms,
            )
            if mqtt:
                await run_mqtt(handler, mqtt, password=mqtt_password, stop=stop)
            else:
                assert nats
                servers = [s.strip() for s in nats.split(",")]
                await run_jetstream(handler, servers, password=mqtt_password, replicas=replicas, stop=stop)
        finally:
            if alarms is not None:  # evaluate what was accepted, save state, send what is pending
                await alarms.stop()
            await engine.dispose()

    try:
        asyncio.run(go())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot reach the broker or database: {exc}", err=True)
        raise typer.Exit(1) from None


@admin_app.command("mqtt-device")
def mqtt_device(
    device: str,
    tenant: TenantOpt,
    passwd: PasswdOpt = None,
    acl: AclOpt = None,
    nats_users: NatsOpt = None,
    remove: Annotated[bool, typer.Option("--remove", help="remove the device from the broker")] = False,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a device MQTT credentials: a new device token (also valid over HTTP) as its password, its
    user name t<tenant>-<device>, and the ACL limiting it to its own topics. Then reload the broker."""
    from trackingbms.server import brokers
    from trackingbms.server import provisioning as p

    _need_files(passwd, acl, nats_users)

    def write(key: str, token: str | None) -> None:
        if passwd is not None and acl is not None:
            brokers.set_mosquitto_user(passwd, key, token)
            brokers.write_mosquitto_acl(acl)
        if nats_users is not None:
            brokers.set_nats_user(nats_users, key, token)

    async def go(url: str) -> dict[str, Any]:
        async with p.open_store(url) as store:
            tid = await store.tenant_by_name(tenant)
            key = brokers.device_key(tid, device)
            if remove:
                write(key, None)
                return {"username": key, "removed": True}
            issued = await store.tenant(tid).new_device_token(device)
        write(key, issued["token"])
        return {"device_id": device, "username": key, "token": issued["token"]}

    def text(r: dict[str, Any]) -> str:
        if r.get("removed"):
            return f"removed {r['username']} from the broker files; reload the broker"
        return (
            f"MQTT user {r['username']} (topics tbms/{r['username']}/...)\n"
            f"token (shown once; the gateway's device_token): {r['token']}\n"
            f'gateway.toml:\n  [[uplinks]]\n  name = "mqtt"\n  url = "mqtts://BROKER:8883"\n'
            f'  username = "{r["username"]}"\n'
            "reload the broker to apply (Mosquitto: SIGHUP; NATS: nats-server --signal reload)"
        )

    _run(go, database_url, data_dir, as_json, text)


@admin_app.command("mqtt-worker")
def mqtt_worker(
    name: str,
    passwd: PasswdOpt = None,
    acl: AclOpt = None,
    nats_users: NatsOpt = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add (or re-key) an ingest worker's broker user: it reads every device's samples, writes acks."""
    from trackingbms.server import brokers

    _need_files(passwd, acl, nats_users)
    if not brokers.worker_name_ok(name):
        msg = f"error: {name!r}: use letters, digits, '_' and '-', not the devices' form t<N>-…"
        typer.echo(msg, err=True)
        raise typer.Exit(2)
    if len(password) < 12:
        typer.echo("error: the worker password must be at least 12 characters", err=True)
        raise typer.Exit(2)
    if passwd is not None and acl is not None:
        brokers.set_mosquitto_user(passwd, name, password)
        brokers.write_mosquitto_acl(acl, [name])
    if nats_users is not None:
        brokers.set_nats_user(nats_users, name, password, device=False)
    if as_json:
        typer.echo(json.dumps({"username": name}))
    else:
        typer.echo(f"worker user {name} written; reload the broker to apply")
