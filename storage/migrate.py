"""Bring a database to the schema this code expects, at start.

The state is read first: an empty database is created at the head revision, an older one
is copied aside (SQLite) and upgraded, a current one is left alone, one newer than the
code or one with tables but no revision is refused. Then, on SQLite, the full-text index
is checked against its content table and rebuilt if it has drifted.

Alembic is synchronous: it runs inside ``AsyncConnection.run_sync`` on the connection
this module hands it (``config.attributes["connection"]``, read by ``migrations/env.py``).
It is imported only when needed: a database already at :data:`HEAD_REVISION` is
recognised by reading its revision with one query, and importing Alembic would add
about a tenth of a second to every start of the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import weakref
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.storage.engine import database_file
from roost.storage.engines import engine_for
from roost.storage.engines.postgres import PARSED_DOC, SEARCH_VECTOR
from roost.storage.errors import DatabaseTooNew, StorageError
from roost.storage.fulltext import FTS_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

logger = logging.getLogger(__name__)

#: Tables Alembic keeps for itself; they do not make a database "non-empty".
VERSION_TABLE = "alembic_version"
#: The newest revision of the migrations shipped here (a test keeps it equal to the
#: script directory's head): a database at it is opened without Alembic.
HEAD_REVISION = "0003"


# One lock per event loop (tests run a loop each; a lock is bound to the loop it ran on).
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class UnmanagedDatabase(StorageError):
    """The database has tables but no Alembic revision: Roost will not guess its schema."""


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """What :func:`prepare_database` found and did.

    Attributes:
        action: ``created`` (was empty), ``upgraded`` (was older) or ``current``.
        from_revision: the revision found, None for an empty database.
        to_revision: the head revision the database is at now.
        backup: the copy made before upgrading an SQLite file, else None.
        fts_rebuilt: True when the full-text index had drifted and was rebuilt.
    """

    action: Literal["created", "upgraded", "current"]
    from_revision: str | None
    to_revision: str
    backup: Path | None = None
    fts_rebuilt: bool = False


def alembic_config() -> Config:
    """The Alembic configuration of the migrations shipped in this package."""
    from alembic.config import Config

    ini = resources.files("roost.storage.migrations").joinpath("alembic.ini")
    return Config(str(ini))


def script_directory(config: Config | None = None) -> ScriptDirectory:
    """The script directory (the list of revisions) this code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config or alembic_config())


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Tell autogenerate which database objects the mapping describes.

    The full-text index (SQLite's FTS5 table and its shadow tables, PostgreSQL's
    ``search_vector`` column and its index) and PostgreSQL's JSONB copy of the parsed
    data (``parsed_doc``) are dialect DDL written out in the migrations, and
    ``ix_parsed_*`` expression indexes are created at run time for parsed keys: none of
    them is in the mapping, so comparing them would report a false drift.
    """
    if name is None:
        return True
    if type_ == "table" and name.startswith(FTS_TABLE):
        return False
    if type_ == "column" and name in (SEARCH_VECTOR, PARSED_DOC):
        return False
    return not (type_ == "index" and name.startswith(("ix_parsed_", "ix_pubsub_items_search")))


def run_alembic_upgrade(
    connection: Connection, revision: str = "head", config: Config | None = None
) -> None:
    """Upgrade the database on ``connection`` to ``revision`` (sync; use ``run_sync``)."""
    from alembic import command

    config = config or alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def run_alembic_downgrade(
    connection: Connection, revision: str, config: Config | None = None
) -> None:
    """Downgrade the database on ``connection`` to ``revision`` (sync; use ``run_sync``)."""
    from alembic import command

    config = config or alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


@dataclass(frozen=True, slots=True)
class _State:
    revisions: tuple[str, ...]
    tables: tuple[str, ...]


def _read_state(connection: Connection) -> _State:
    from alembic.runtime.migration import MigrationContext

    revisions = MigrationContext.configure(connection).get_current_heads()
    engine = engine_for(connection)
    tables = tuple(
        name
        for name in inspect(connection).get_table_names()
        if name != VERSION_TABLE and not engine.internal_table(name)
    )
    return _State(tuple(revisions), tables)


async def backup_sqlite_database(conn: AsyncConnection, path: Path, revision: str) -> Path:
    """Copy the SQLite file at ``path`` aside, as ``<name>.bak-<revision>-<UTC time>``.

    The WAL is checkpointed into the main file first, so that the copy holds every
    committed page. The copy is created 0600: it holds passwords too.

    Args:
        conn: a connection on that database, used for the checkpoint.
        path: the database file.
        revision: the revision the database is at, written into the copy's name.

    Returns:
        The path of the copy.

    Raises:
        StorageError: when another connection keeps the checkpoint from completing (the
            copy would then miss committed data).
    """
    row = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).one()
    await conn.rollback()
    if row[0]:
        raise StorageError(
            "another process is using the database, so it cannot be copied safely "
            "before the upgrade; stop it and start again"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return await asyncio.to_thread(_copy_private, path, f"{path.name}.bak-{revision}-{stamp}")


def _copy_private(path: Path, name: str) -> Path:
    target = path.with_name(name)
    counter = 1
    while target.exists():  # two upgrades within a second: keep both copies
        target = path.with_name(f"{name}.{counter}")
        counter += 1
    # Written under a temporary name and renamed once whole: a crash while copying must
    # not leave a file named as a backup that is not one. A leftover from such a crash
    # is overwritten by the next copy.
    partial = path.with_name(f".{path.name}.bak-partial")
    fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out, path.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(target)
    _fsync_directory(path.parent)
    return target


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def repair_fulltext(engine: AsyncEngine) -> bool:
    """Check the full-text index against the items; rebuild it when it drifted.

    Only where the index can drift (SQLite's FTS5 table, kept by triggers). The check
    reads the whole index and every item's text (about 7 µs an item), so a caller with
    a large cache may run it after start, with ``check_fulltext=False`` at
    :func:`prepare_database`; the rebuild is one write transaction either way.

    Returns:
        True when the index had drifted and was rebuilt; False when it was in step, or
        when the database keeps its index in step itself (PostgreSQL).
    """
    database = engine_for(engine)
    if not database.fulltext_can_drift:
        return False
    async with engine.connect() as conn:
        consistent = await database.fulltext_is_consistent(conn)
        await conn.rollback()
        if consistent:
            return False
        started = time.perf_counter()
        await database.rebuild_fulltext(conn)
        await conn.commit()
    logger.warning(
        "the full-text index had drifted from the cached items (a change made outside "
        "Roost, a damaged file?); rebuilt it in %.1f s",
        time.perf_counter() - started,
    )
    return True


async def prepare_database(
    engine: AsyncEngine, url: URL, *, config: Config | None = None, check_fulltext: bool = True
) -> MigrationOutcome:
    """Detect the database's state and bring it to the head revision.

    Args:
        engine: the engine on the database.
        url: its URL (tells where an SQLite file lives, for the backup copy).
        config: another Alembic configuration than the package's (tests use it to add
            revisions that exist only for them).
        check_fulltext: run :func:`repair_fulltext` before returning (on SQLite).

    Returns:
        What was found and done.

    Raises:
        DatabaseTooNew: the database is at a revision this code does not know.
        UnmanagedDatabase: the database has tables but no revision.
        StorageError: the copy before an upgrade could not be made safely.
    """
    # Alembic's ``context`` is one module-level proxy: two migrations interleaved in
    # this process (two engines opened at once) would tear it down under each other.
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        if config is None and await _at_head(engine):
            fts_rebuilt = await repair_fulltext(engine) if check_fulltext else False
            return MigrationOutcome("current", HEAD_REVISION, HEAD_REVISION, None, fts_rebuilt)
        return await _prepare(engine, url, config or alembic_config(), check_fulltext)


async def _at_head(engine: AsyncEngine) -> bool:
    """Whether the database is at :data:`HEAD_REVISION`, read without Alembic (every
    other state is left to :func:`_prepare`, which tells them apart)."""

    def read(connection: Connection) -> bool:
        if not inspect(connection).has_table(VERSION_TABLE):
            return False
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        return [row[0] for row in rows] == [HEAD_REVISION]

    async with engine.connect() as conn:
        found = await conn.run_sync(read)
        await conn.rollback()
    return found


async def _prepare(
    engine: AsyncEngine, url: URL, config: Config, check_fulltext: bool
) -> MigrationOutcome:
    scripts = script_directory(config)
    head = scripts.get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StorageError("no migrations found in the installed package")
    known = {script.revision for script in scripts.walk_revisions()}

    async with engine.connect() as conn:
        state = await conn.run_sync(_read_state)
        await conn.rollback()

    backup: Path | None = None
    action: Literal["created", "upgraded", "current"]
    from_revision = state.revisions[0] if state.revisions else None
    if not state.revisions:
        if state.tables:
            raise UnmanagedDatabase(
                f"the database {url.render_as_string(hide_password=True)} has tables "
                f"({', '.join(sorted(state.tables)[:5])}…) but no schema revision: it was "
                "not created by Roost, or its alembic_version table was lost; point Roost "
                "at another database, or check its schema and stamp it with alembic"
            )
        action = "created"
    else:
        unknown = [rev for rev in state.revisions if rev not in known]
        if unknown:
            raise DatabaseTooNew(unknown[0], head)
        action = "current" if state.revisions == (head,) else "upgraded"

    if action == "upgraded" and from_revision is not None:
        path = database_file(url)
        if path is not None:
            async with engine.connect() as conn:
                backup = await backup_sqlite_database(conn, path, from_revision)
            logger.info("copied the database to %s before upgrading it", backup)
        else:
            logger.info("upgrading a server database: its backups are its operator's")

    if action != "current":
        started = time.perf_counter()
        async with engine.connect() as conn:
            await conn.run_sync(run_alembic_upgrade, "head", config)
        logger.info(
            "database %s from %s to %s in %.2f s",
            action,
            from_revision or "empty",
            head,
            time.perf_counter() - started,
        )

    fts_rebuilt = await repair_fulltext(engine) if check_fulltext else False
    return MigrationOutcome(action, from_revision, head, backup, fts_rebuilt)
