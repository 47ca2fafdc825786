"""Alembic environment of Roost's schema.

Three ways in:
- Roost at start (:mod:`roost.storage.migrate`) passes an open connection in
  ``config.attributes["connection"]``; the migrations run on it, and this module leaves
  the application's logging alone.
- The ``alembic`` command with ``-x url=...`` or ``ROOST_DATABASE_URL``: that database.
- The ``alembic`` command with neither: a scratch SQLite file, brought to head first, so
  that ``alembic revision --autogenerate`` compares the mapping with the newest revision.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from alembic.operations import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection

from roost.storage.engine import DATABASE_URL_ENV, create_engine, resolve_database_url
from roost.storage.engines import engine_for
from roost.storage.migrate import include_object
from roost.storage.models import Base

config = context.config


def number_revision(
    migration_context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[MigrationScript],
) -> None:
    """Give a new revision the next number (0002, 0003…) unless ``--rev-id`` named it.

    Sequential ids make the versions folder read in order; Alembic's default is random hex.
    """
    script = directives[0] if directives else None
    if script is None or (script.rev_id and script.rev_id.isdigit()):
        return
    heads = context.script.get_heads()
    numbers = [int(head) for head in heads if head.isdigit()]
    script.rev_id = f"{max(numbers, default=0) + 1:04d}"


def run_on_connection(connection: Connection) -> None:
    """Run the migrations Alembic asked for on ``connection``."""
    database = engine_for(connection)
    with database.migration_transaction(connection):
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            include_object=include_object,
            compare_type=True,
            # SQLite alters tables by rebuilding them; batch mode writes that out.
            render_as_batch=database.render_as_batch,
            # One transaction around every step: a failed upgrade leaves the old schema.
            transactional_ddl=True,
            transaction_per_migration=False,
            process_revision_directives=number_revision,
        )
        with context.begin_transaction():
            context.run_migrations()
            database.check_after_migration(connection)


async def _run_on_url(url: URL) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_on_connection)
    finally:
        await engine.dispose()


def _scratch_database_at_head(folder: Path) -> URL:
    """Create an SQLite file in ``folder`` and upgrade it to head in a child process.

    A child process, because Alembic's ``context`` is a single module-level proxy that a
    nested command in this process would tear down under the running one.
    """
    url = f"sqlite:///{folder / 'scratch.sqlite'}"
    ini = config.config_file_name
    if ini is None:
        raise RuntimeError("a scratch database needs the alembic.ini path")
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", ini, "-x", f"url={url}", "upgrade", "head"],
        check=True,
        env={**os.environ, DATABASE_URL_ENV: ""},
    )
    return resolve_database_url(url)


def _run_from_command_line() -> None:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    x_args: dict[str, Any] = context.get_x_argument(as_dictionary=True)
    configured = x_args.get("url") or os.environ.get(DATABASE_URL_ENV)
    if configured:
        asyncio.run(_run_on_url(resolve_database_url(configured)))
        return
    with tempfile.TemporaryDirectory(prefix="roost-migrations-") as folder:
        print(
            f"no -x url=... nor {DATABASE_URL_ENV}: using a scratch database at head",
            file=sys.stderr,
        )
        asyncio.run(_run_on_url(_scratch_database_at_head(Path(folder))))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the migrations need a database")

_connection = config.attributes.get("connection")
if _connection is not None:
    run_on_connection(_connection)
else:
    _run_from_command_line()
