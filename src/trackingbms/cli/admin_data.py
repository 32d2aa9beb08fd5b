"""Commands: ``trackingbms admin backup`` (and the other data commands for integrations).

Backup uses SQLite's online backup API (``sqlite3.Connection.backup``): it copies a consistent snapshot
while the server keeps writing, page batch by page batch, which copying the file (and its WAL) would not.
PostgreSQL is backed up with its own ``pg_dump``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from trackingbms.cli.server import DataDirOpt, DbOpt, _settings, admin_app

EXIT_ERROR = 1
EXIT_USAGE = 2
BACKUP_PAGES_PER_STEP = 2048  # ~8 MB at 4 KiB pages: the server gets the write lock back between steps


def _fail(msg: str, code: int = EXIT_ERROR) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for another backend."""
    if not url.startswith("sqlite"):
        return None
    return Path(url.split(":///", 1)[1]) if ":///" in url else None


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
