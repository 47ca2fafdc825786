"""SQLite (3.38 or later): one file, WAL, JSON1 functions, FTS5, GLOB.

The database is one file, created owner-only before SQLite opens it (it holds account
passwords). The full-text index is an FTS5 table with external content
(``pubsub_items.search_text``), kept in step by triggers: a crash can leave it behind,
so it is checked at start (:meth:`SqliteEngine.fulltext_is_consistent`). How each
connection is set up is :mod:`roost.storage.engines.sqlite_connections`'.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    and_,
    bindparam,
    event,
    func,
    literal,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
from sqlalchemy.sql.expression import literal_column

from roost.storage.engines.base import (
    PLAIN_KEY,
    DatabaseEngine,
    JsonKind,
    JsonPath,
    StatementLimit,
    checked_key,
)
from roost.storage.engines.like_patterns import like_to_glob
from roost.storage.engines.sqlite_connections import (
    POOL_OVERFLOW,
    POOL_SIZE,
    prepare_sqlite_file,
    set_up_sqlite_engine,
    sqlite_memory_used,
    sqlite_url_file,
)
from roost.storage.fulltext import FTS_TABLE

if TYPE_CHECKING:
    from roost.storage.leases import ProfileLeases
    from roost.storage.reads import ReadRunner
    from roost.storage.writes import WriteRunner

#: SQLite's primary result codes for a lock another connection holds.
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
#: Virtual machine steps between two looks at a statement time limit.
PROGRESS_STEPS = 1_000

log = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of a file closed by a daemon whose full-text index was in step
#: with the items (:meth:`SqliteEngine.mark_clean_stop`); 0 while a daemon has it open.
CLEAN_STOP = 1

_SQLITE_KINDS: dict[str, tuple[str, ...]] = {
    "number": ("integer", "real"),
    "string": ("text",),
    "boolean": ("true", "false"),
    "array": ("array",),
}


class SqliteProgressLimit(StatementLimit):
    """A time limit kept by SQLite's progress handler (:meth:`over`)."""

    def over(self) -> int:
        """The SQLite progress handler: non-zero (stop the statement) once out of time."""
        if time.monotonic() > self.deadline:
            self.interrupted = True
            return 1
        return 0


class SqliteEngine(DatabaseEngine):
    """SQLite: see the module documentation."""

    name = "sqlite"
    insert = staticmethod(sqlite.insert)
    async_driver = "sqlite+aiosqlite"
    other_drivers = ("sqlite", "sqlite+pysqlite")
    single_file = True
    fulltext_can_drift = True
    shares_database = False
    single_writer = True
    render_as_batch = True

    # -- connections ---------------------------------------------------------------------

    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        """See :meth:`DatabaseEngine.create_async_engine`: pragmas on every connection;
        for a file, a pool of up to :data:`POOL_SIZE` connections kept once opened."""
        path = sqlite_url_file(url)
        if path is not None:
            prepare_sqlite_file(path)
            kwargs.setdefault("pool_size", POOL_SIZE)
            kwargs.setdefault("max_overflow", POOL_OVERFLOW)
        engine = sa_create_async_engine(url, **kwargs)
        set_up_sqlite_engine(engine.sync_engine)
        return engine

    def database_file(self, url: URL) -> Path | None:
        """See :meth:`DatabaseEngine.database_file`."""
        return sqlite_url_file(url)

    def read_runner(self, engine: AsyncEngine, url: URL) -> ReadRunner:
        """See :meth:`DatabaseEngine.read_runner`: connections of its own to a file (an
        in-memory database is seen only through the engine's)."""
        from roost.storage.reads import EngineReads, SqliteReads

        path = sqlite_url_file(url)
        return EngineReads(engine) if path is None else SqliteReads(path)

    def write_runner(self, engine: AsyncEngine, url: URL) -> WriteRunner:
        """See :meth:`DatabaseEngine.write_runner`: at once, on a connection of its own
        to a file, set up as the engine's are (an in-memory database is seen only through
        the engine's)."""
        from roost.storage.writes import SessionWrites, sqlite_file_writes

        if sqlite_url_file(url) is None:
            return SessionWrites(engine)
        return sqlite_file_writes(engine, url, set_up_sqlite_engine)

    def open_leases(self, engine: AsyncEngine, url: URL) -> ProfileLeases:
        """See :meth:`DatabaseEngine.open_leases`: locks on ``<database file>.leases``;
        none needed for an in-memory database, which no other daemon can open."""
        from roost.storage.leases import FileLeases, LocalLeases

        path = sqlite_url_file(url)
        return LocalLeases() if path is None else FileLeases(Path(f"{path}.leases"))

    def client_memory(self) -> int | None:
        """See :meth:`DatabaseEngine.client_memory`: SQLite's own count of what it has
        allocated (every connection's page cache and statements among it)."""
        memory_used = sqlite_memory_used()
        return None if memory_used is None else int(memory_used())

    # -- migrations ----------------------------------------------------------------------

    @contextmanager
    def migration_transaction(self, connection: Connection) -> Iterator[None]:
        """Run what the block does with foreign keys off, in one real transaction.

        Batch mode rebuilds a table (copy, drop, rename): with foreign keys on, dropping
        a parent table would cascade-delete its children's rows. ``PRAGMA foreign_keys``
        is a no-op inside a transaction, so it is set first, with the driver in
        autocommit mode; the block's SQLAlchemy transaction then emits an explicit
        ``BEGIN IMMEDIATE`` so that the DDL is atomic (the driver would otherwise leave
        DDL outside any transaction). IMMEDIATE takes the write lock before Alembic reads
        the current revision: a second process migrating the same file waits, then finds
        it at head and does nothing. The previous settings are restored afterwards, also
        on failure.
        """
        if connection.in_transaction():
            connection.commit()
        previous_isolation = connection.get_isolation_level()
        connection.execution_options(isolation_level="AUTOCOMMIT")
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()

        def emit_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(connection, "begin", emit_begin)
        try:
            yield
        finally:
            event.remove(connection, "begin", emit_begin)
            if connection.in_transaction():
                connection.rollback()
            connection.exec_driver_sql(f"PRAGMA foreign_keys={1 if foreign_keys else 0}")
            connection.commit()
            connection.execution_options(isolation_level=previous_isolation)

    def check_after_migration(self, connection: Connection) -> None:
        """See :meth:`DatabaseEngine.check_after_migration`: foreign keys were off, so
        make sure no step left a dangling reference."""
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")

    def internal_table(self, table_name: str) -> bool:
        """See :meth:`DatabaseEngine.internal_table`: ``sqlite_*`` and the FTS5 table's
        shadow tables."""
        return table_name.startswith("sqlite_") or table_name.startswith(FTS_TABLE)

    # -- full text -----------------------------------------------------------------------

    @staticmethod
    def fts_query(terms: Sequence[str]) -> str:
        """The FTS5 query requiring each term as a quoted string (no FTS5 syntax read)."""
        return " ".join('"' + term.replace('"', '""') + '"' for term in terms)

    def fulltext_match(
        self, item_row_id: Any, terms: Sequence[str], *, broad: bool = False
    ) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.fulltext_match`: the FTS5 table's rowids are item
        row ids.

        ``broad`` writes ``id + 0 IN (…)``: an expression SQLite cannot look rows up by,
        so the ORDER BY's index drives the query and LIMIT stops it early.
        """
        matches = (
            sql_text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query")
            .bindparams(fts_query=self.fts_query(terms))
            .columns(rowid=Integer)
        )
        tested = item_row_id + literal(0, literal_execute=True) if broad else item_row_id
        result: ColumnElement[bool] = tested.in_(matches)
        return result

    def fulltext_count(self, terms: Sequence[str], cap: int) -> Any:
        """See :meth:`DatabaseEngine.fulltext_count`."""
        return sql_text(
            f"SELECT count(*) FROM (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q"
            " LIMIT :cap)"
        ).bindparams(q=self.fts_query(terms), cap=cap)

    async def fulltext_is_consistent(self, conn: AsyncConnection) -> bool:
        """Run FTS5's integrity check against the content table.

        Returns False when the index has drifted from ``pubsub_items`` (a manual edit, a
        damaged file: the triggers write it in the items' own transactions), True when it
        is in step or when the database has no index yet.
        """
        tables = await conn.run_sync(
            lambda c: c.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (FTS_TABLE,)
            ).all()
        )
        if not tables:
            return True
        try:
            await conn.execute(
                sql_text(
                    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"
                )
            )
        except Exception as exc:  # sqlite reports drift as SQLITE_CORRUPT_VTAB
            if "malformed" in str(exc) or "corrupt" in str(exc).lower():
                return False
            raise
        return True

    async def rebuild_fulltext(self, conn: AsyncConnection) -> None:
        """See :meth:`DatabaseEngine.rebuild_fulltext`: FTS5's ``rebuild``."""
        await conn.execute(sql_text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"))

    async def mark_clean_stop(self, conn: AsyncConnection) -> None:
        """See :meth:`DatabaseEngine.mark_clean_stop`: the file header's
        ``user_version``, which nothing else in Roost uses, set to :data:`CLEAN_STOP`."""
        await conn.exec_driver_sql(f"PRAGMA user_version = {CLEAN_STOP}")

    async def take_clean_stop(self, conn: AsyncConnection) -> bool:
        """See :meth:`DatabaseEngine.take_clean_stop`."""
        found = (await conn.exec_driver_sql("PRAGMA user_version")).scalar()
        if found != CLEAN_STOP:
            return False
        await conn.exec_driver_sql("PRAGMA user_version = 0")
        return True

    # -- JSON and patterns ---------------------------------------------------------------

    @staticmethod
    def json_path(path: JsonPath) -> str:
        """The SQLite JSON path text for validated segments (``$.a[0]."b-c"``)."""
        parts = ["$"]
        for seg in path:
            if isinstance(seg, int):
                parts.append(f"[{seg}]")
            elif PLAIN_KEY.match(seg):
                parts.append(f".{seg}")
            else:
                parts.append(f'."{checked_key(seg)}"')
        return "".join(parts)

    def _path_literal(self, path: JsonPath) -> ColumnElement[Any]:
        return literal_column(f"'{self.json_path(path)}'")

    def _extract(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        return func.json_extract(column, self._path_literal(path))

    def json_value(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.json_value`: ``json_extract(column, '<path>')``,
        which gives numbers and strings as SQL values of their own kind."""
        return self._extract(column, path)

    def json_order(self, column: Any, path: JsonPath) -> list[ColumnElement[Any]]:
        """See :meth:`DatabaseEngine.json_order`: SQLite orders numbers before text, and
        text by its bytes (UTF-8, so by code point)."""
        return [self._extract(column, path)]

    def json_is(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.json_is`."""
        return func.json_type(column, self._path_literal(path)).in_(_SQLITE_KINDS[kind])

    def json_is_bool(self, column: Any, path: JsonPath, value: bool) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.json_is_bool`."""
        return func.json_type(column, self._path_literal(path)) == ("true" if value else "false")

    def array_has_any(
        self, column: Any, path: JsonPath, kind: JsonKind, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.array_has_any`."""
        elements = func.json_each(column, self._path_literal(path)).table_valued("value", "type")
        element_matches: ColumnElement[bool]
        if kind == "boolean":
            element_matches = elements.c.type.in_(["true" if v else "false" for v in values])
        else:
            element_matches = and_(
                elements.c.type.in_(_SQLITE_KINDS[kind]), elements.c.value.in_(list(values))
            )
        # json_each walks an object's members or yields a scalar itself: arrays only.
        return and_(
            self.json_is(column, path, "array"),
            select(literal(1)).select_from(elements).where(element_matches).exists(),
        )

    def like(self, expr: ColumnElement[Any], pattern: str, *, ignore_case: bool) -> Any:
        """See :meth:`DatabaseEngine.like`: translated to GLOB (see
        :func:`~roost.storage.engines.like_patterns.like_to_glob`), since SQLite's LIKE
        ignores ASCII case only and always."""
        return expr.op("GLOB")(bindparam(None, like_to_glob(pattern, ignore_case=ignore_case)))

    def json_merge(self, column: Any, patch: Mapping[str, Any]) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.json_merge`: ``json_set`` of each key (unlike
        ``json_patch``, it keeps a key set to null)."""
        args: list[Any] = [column]
        for key, value in patch.items():
            args.append(bindparam(None, "$." + json.dumps(key)))
            args.append(func.json(bindparam(None, json.dumps(value))))
        return func.json_set(*args)

    def expression_index_ddl(
        self, name: str, table: str, column: str, path: JsonPath
    ) -> Sequence[str]:
        """See :meth:`DatabaseEngine.expression_index_ddl`."""
        return (
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"(json_extract({column}, '{self.json_path(path)}'))",
        )

    # -- lists and upserts ---------------------------------------------------------------

    def in_named_values(self, column: Any, param: BindParameter[Any]) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.in_named_values`: a JSON array expanded by
        ``json_each``."""
        listed = func.json_each(param).table_valued("value")
        result: ColumnElement[bool] = column.in_(select(listed.c.value))
        return result

    # -- limits --------------------------------------------------------------------------

    @asynccontextmanager
    async def statement_time_limit(
        self, conn: AsyncConnection, deadline: float
    ) -> AsyncIterator[StatementLimit]:
        """See :meth:`DatabaseEngine.statement_time_limit`: a progress handler on the
        connection for the block, removed after it, before the connection goes back to
        the pool; should removing it fail, the handler has stopped stopping anything by
        then."""
        limit = SqliteProgressLimit(deadline)
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.set_progress_handler(limit.over, PROGRESS_STEPS)
        try:
            yield limit
        finally:
            limit.deadline = math.inf
            await driver.set_progress_handler(None, 0)

    def was_stopped(self, exc: BaseException, limit: StatementLimit) -> bool:
        """See :meth:`DatabaseEngine.was_stopped`."""
        return isinstance(exc, DBAPIError) and limit.interrupted

    def is_transient(self, exc: BaseException) -> bool:
        """See :meth:`DatabaseEngine.is_transient`: ``SQLITE_BUSY`` or ``SQLITE_LOCKED``
        ("database is locked"), what a writer meets when another holds the file's one
        write lock past :data:`SQLITE_BUSY_TIMEOUT_MS`, or when its read snapshot went
        stale before it could write (where SQLite waits for nothing)."""
        if not isinstance(exc, DBAPIError):
            return False
        code = getattr(exc.orig, "sqlite_errorcode", None)
        if code is not None:
            # The primary code is the low byte (SQLITE_BUSY_SNAPSHOT is SQLITE_BUSY | 2<<8).
            return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
        return "database is locked" in str(exc.orig) or "database table is locked" in str(exc.orig)

    # -- whole-database copies -----------------------------------------------------------

    async def begin_snapshot(self, conn: AsyncConnection) -> None:
        """See :meth:`DatabaseEngine.begin_snapshot`: an explicit ``BEGIN``, since the
        driver opens a transaction only before a write (each read would otherwise see
        the file as it was then); in WAL mode the snapshot is taken at the first read,
        and writers go on beside it."""
        await conn.exec_driver_sql("BEGIN")

    async def database_identity(self, conn: AsyncConnection) -> str:
        """See :meth:`DatabaseEngine.database_identity`: the file's device and inode (a
        link or another spelling of its path is the same file); an in-memory database
        is its connection's own."""
        result = await conn.execute(
            sql_text("SELECT file FROM pragma_database_list WHERE name = 'main'")
        )
        path = str(result.scalar() or "")
        if not path:
            raw = await conn.get_raw_connection()
            return f"sqlite-memory:{id(raw.driver_connection)}"
        found = await asyncio.to_thread(Path(path).stat)
        return f"sqlite:{found.st_dev}:{found.st_ino}"
