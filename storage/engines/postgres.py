"""PostgreSQL (12 or later, through asyncpg): JSONB, a generated ``tsvector``, advisory locks.

Parsed data is kept as written (``json``, so that a read gives back exactly the text
the parser's output was stored as) with a generated JSONB copy, ``parsed_doc``, that
searches read; other JSON columns are JSONB. The full-text index is
``pubsub_items.search_vector``, a stored generated column
(``to_tsvector('simple', search_text)``) with a GIN index: the database keeps it in step
with every write, so there is nothing to check at start. The ``simple`` configuration
neither stems nor drops words, as SQLite's ``unicode61`` tokenizer does not; SQLite also
drops diacritics, which :meth:`PostgresEngine.indexed_text` does here before the text is
stored (and the search terms are folded the same way).

Strings are compared and ordered by code point (``COLLATE "C"``) as on SQLite, whatever
the database's own collation.
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Numeric,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    event,
    func,
    literal,
    or_,
    select,
    table,
    type_coerce,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
from sqlalchemy.sql.expression import literal_column

from roost.storage.engines.base import (
    DatabaseEngine,
    JsonKind,
    JsonPath,
    StatementLimit,
    iter_path_keys,
)
from roost.storage.engines.like_patterns import like_to_regex

if TYPE_CHECKING:
    from roost.storage.leases import ProfileLeases
    from roost.storage.reads import ReadRunner
    from roost.storage.writes import WriteRunner

#: The column holding each item's full-text vector (generated; not in the ORM mapping).
SEARCH_VECTOR = "search_vector"
#: The JSONB copy of an item's parsed data that searches read (generated from ``parsed``,
#: which keeps the exact JSON text given back to callers; not in the ORM mapping).
PARSED_DOC = "parsed_doc"
ITEMS_TABLE = "pubsub_items"
#: The text search configuration: words as they are, lower-cased, no stemming.
TS_CONFIG = "simple"
#: The most characters of an item's text indexed: a ``tsvector`` holds at most 1 MB.
MAX_INDEXED_CHARS = 200_000
#: The lock every migration takes first, so that two daemons starting on one new
#: database do not both create the schema (an arbitrary constant: "roost" in ASCII).
MIGRATION_LOCK = 0x726F6F7374
#: The SQLSTATE of a statement cancelled by ``statement_timeout``.
QUERY_CANCELED = "57014"
#: serialization_failure, deadlock_detected, lock_not_available: tried again, the same
#: transaction may well succeed.
TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})
#: Connections per daemon: reads, writes and searches of every profile share them. Each
#: is opened when first needed and then kept: an overflow connection above the pool is
#: closed as soon as it is given back, and under 32 busy bus clients a pool of 10 with 10
#: more at busy times opened and closed about 1.5 connections a second (a server process
#: forked, authentication and asyncpg's type set-up each time).
POOL_SIZE = 20
POOL_OVERFLOW = 0
#: Each connection's settings (short reads' connections too): the server's views name it.
SERVER_SETTINGS = {"application_name": "roostd"}
# What SQLAlchemy's asyncpg adapter takes out of the connect arguments for itself.
_ADAPTER_ARGUMENTS = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)

_TEXT_ARRAY = postgresql.ARRAY(Text())

_JSONB_KINDS = {"number": "number", "string": "string", "boolean": "boolean", "array": "array"}


def fold_text(text: str) -> str:
    """``text`` without diacritics (``é`` → ``e``), as SQLite's tokenizer reads it."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


class _ServerLimit(StatementLimit):
    def __init__(self, conn: AsyncConnection, deadline: float) -> None:
        super().__init__(deadline)
        self._conn = conn

    async def before_statement(self) -> None:
        """Set what is left of the time as the transaction's ``statement_timeout``."""
        left_ms = max(1, math.ceil((self.deadline - time.monotonic()) * 1000))
        await self._conn.execute(sql_text(f"SET LOCAL statement_timeout = {int(left_ms)}"))


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool ``checkout`` hook: a connection whose server side has gone is not handed
    out. The server ended it, and most likely every other: the pool lets go of all the
    connections it made before now and connects anew."""
    if dbapi_connection.driver_connection.is_closed():
        raise InvalidatePoolError("the server closed this connection")


class PostgresEngine(DatabaseEngine):
    """PostgreSQL: see the module documentation."""

    name = "postgresql"
    insert = staticmethod(postgresql.insert)
    async_driver = "postgresql+asyncpg"
    other_drivers = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")
    single_file = False
    fulltext_can_drift = False
    shares_database = True
    render_as_batch = False

    # -- connections ---------------------------------------------------------------------

    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        """See :meth:`DatabaseEngine.create_async_engine`: a pool of up to
        :data:`POOL_SIZE` connections (plus :data:`POOL_OVERFLOW`), each checked as it leaves
        the pool so that a restarted server costs a reconnection, not an error.

        The check is asyncpg's own knowledge of its socket, not SQLAlchemy's
        ``pool_pre_ping``: that ping is three round trips (BEGIN, an empty statement,
        ROLLBACK) before every use, which doubled the cost of a cached read. A server
        that ends its sessions (a restart, ``pg_terminate_backend``) closes the sockets,
        which asyncpg sees; a connection found closed is replaced before use.
        """
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", POOL_OVERFLOW)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("server_settings", dict(SERVER_SETTINGS))
        engine = sa_create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
        return engine

    def read_runner(self, engine: AsyncEngine, url: URL) -> ReadRunner:
        """See :meth:`DatabaseEngine.read_runner`: short reads on plain asyncpg
        connections of their own, outside a transaction (``READ COMMITTED`` gives each
        statement its own snapshot anyway), longer ones through the engine's pool
        (:class:`~roost.storage.postgres_reads.PostgresReads`)."""
        import asyncpg  # type: ignore[import-untyped]

        from roost.storage.postgres_reads import PostgresReads

        # The engine's own translation of the URL (host, socket directory, SSL options).
        args, params = engine.dialect.create_connect_args(engine.url)
        for name in _ADAPTER_ARGUMENTS:
            params.pop(name, None)
        params.setdefault("server_settings", dict(SERVER_SETTINGS))

        async def connect() -> Any:
            return await asyncpg.connect(*args, **params)

        return PostgresReads(engine, connect)

    def write_runner(self, engine: AsyncEngine, url: URL) -> WriteRunner:
        """See :meth:`DatabaseEngine.write_runner`: through the engine's pool, several
        at once."""
        from roost.storage.writes import SessionWrites

        return SessionWrites(engine)

    def open_leases(self, engine: AsyncEngine, url: URL) -> ProfileLeases:
        """See :meth:`DatabaseEngine.open_leases`: advisory locks on a connection of
        their own."""
        from roost.storage.advisory_leases import AdvisoryLeases

        return AdvisoryLeases(engine, url)

    # -- migrations ----------------------------------------------------------------------

    @contextmanager
    def migration_transaction(self, connection: Connection) -> Iterator[None]:
        """See :meth:`DatabaseEngine.migration_transaction`: DDL is transactional here;
        a session-level advisory lock makes a second daemon migrating the same database
        wait, then find it at head."""
        if connection.in_transaction():
            connection.commit()
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        connection.commit()
        try:
            yield
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            connection.commit()

    # -- full text -----------------------------------------------------------------------

    def indexed_text(self, text: str) -> str:
        """See :meth:`DatabaseEngine.indexed_text`: diacritics dropped, and at most
        :data:`MAX_INDEXED_CHARS` characters."""
        return fold_text(text[:MAX_INDEXED_CHARS])

    def _ts_query(self, terms: Sequence[str]) -> ColumnElement[Any]:
        queries = [
            func.phraseto_tsquery(literal_column(f"'{TS_CONFIG}'"), bindparam(None, fold_text(t)))
            for t in terms
        ]
        combined: ColumnElement[Any] = queries[0]
        for query in queries[1:]:
            combined = combined.op("&&")(query)
        return combined

    def fulltext_match(
        self, item_row_id: Any, terms: Sequence[str], *, broad: bool = False
    ) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.fulltext_match`: the item's vector against
        ``phraseto_tsquery`` of each term, all required. The plan is steered by the order
        (:meth:`fulltext_order_key`), not by this test."""
        vector: ColumnElement[Any] = literal_column(f"{item_row_id.table.name}.{SEARCH_VECTOR}")
        result: ColumnElement[bool] = vector.op("@@")(self._ts_query(terms))
        return result

    def fulltext_order_key(self, created: Any, *, broad: bool) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.fulltext_order_key`: for a term that is not broad,
        ``created + 0``, which no index orders, so that the matches are read from the GIN
        index and sorted. Left to its row estimates, the planner walks the date index
        and tests each row instead, which reads most of a large table for a rare term
        (175 ms at 1M items)."""
        if broad:
            key: ColumnElement[Any] = created
        else:
            key = created + literal(0, literal_execute=True)
        return key

    def fulltext_count(self, terms: Sequence[str], cap: int) -> Any:
        """See :meth:`DatabaseEngine.fulltext_count`."""
        vector: ColumnElement[Any] = literal_column(f"{ITEMS_TABLE}.{SEARCH_VECTOR}")
        found = (
            select(literal_column("1"))
            .select_from(table(ITEMS_TABLE))
            .where(vector.op("@@")(self._ts_query(terms)))
            .limit(cap)
            .subquery()
        )
        return select(func.count()).select_from(found)

    # -- JSON and patterns ---------------------------------------------------------------

    @staticmethod
    def _path_literal(path: JsonPath) -> ColumnElement[Any]:
        # Keys are checked against the plain-key grammar: no quote or brace can appear.
        return literal_column("'{" + ",".join(iter_path_keys(path)) + "}'")

    @staticmethod
    def _document(column: Any) -> ColumnElement[Any]:
        """The JSONB form of the items' ``parsed`` column: its generated copy."""
        doc: ColumnElement[Any] = literal_column(f"{column.table.name}.{PARSED_DOC}", JSONB)
        return doc

    def _at(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        found: ColumnElement[Any] = self._document(column).op("#>", return_type=JSONB)(
            self._path_literal(path)
        )
        return found

    def _text_at(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        found: ColumnElement[Any] = self._document(column).op("#>>", return_type=Text)(
            self._path_literal(path)
        )
        return found

    def _string_at(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        # type_coerce: a plain Text type, so that the collation is written once, here,
        # and not also after each bound operand (PostgreSQL's BETWEEN takes none there).
        return type_coerce(self._text_at(column, path).collate("C"), Text)

    def _number_at(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        # The CASE keeps the cast from ever seeing a non-number.
        return case(
            (
                func.jsonb_typeof(self._at(column, path)) == "number",
                cast(self._text_at(column, path), Numeric),
            ),
        )

    def json_value(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.json_value`: numbers as ``numeric``, strings as text
        in code point order."""
        return self._number_at(column, path) if kind == "number" else self._string_at(column, path)

    def json_operand(self, value: Any, kind: JsonKind) -> Any:
        """See :meth:`DatabaseEngine.json_operand`: numbers bound as ``numeric`` (exact
        for integers of any size)."""
        if kind == "number":
            return bindparam(None, Decimal(repr(value)), type_=Numeric())
        return value

    def json_order(self, column: Any, path: JsonPath) -> list[ColumnElement[Any]]:
        """See :meth:`DatabaseEngine.json_order`: as SQLite orders ``json_extract``'s
        values: numbers (booleans as 0 and 1) before text (strings, and arrays and
        objects as their JSON text), text by code point; a missing value or JSON null is
        NULL."""
        kind = func.jsonb_typeof(self._at(column, path))
        rank = case(
            (kind.in_(["number", "boolean"]), 0),
            (kind.in_(["string", "array", "object"]), 1),
        )
        as_number = case(
            (kind == "number", cast(self._text_at(column, path), Numeric)),
            (self._at(column, path) == literal_column("'true'::jsonb"), 1),
            (self._at(column, path) == literal_column("'false'::jsonb"), 0),
        )
        return [rank, as_number, self._string_at(column, path)]

    def json_is(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.json_is`."""
        return func.jsonb_typeof(self._at(column, path)) == _JSONB_KINDS[kind]

    def json_is_bool(self, column: Any, path: JsonPath, value: bool) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.json_is_bool`."""
        literal = "true" if value else "false"
        return self._at(column, path) == literal_column(f"'{literal}'::jsonb")

    def array_has_any(
        self, column: Any, path: JsonPath, kind: JsonKind, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.array_has_any`: JSONB containment of a one-element
        array (a top-level element equal to the value, of the same kind; numbers compare
        as numbers)."""
        array = self._at(column, path)
        held = [
            array.op("@>")(cast(bindparam(None, json.dumps([v]), type_=Text()), JSONB))
            for v in values
        ]
        return and_(self.json_is(column, path, "array"), or_(*held))

    def like(self, expr: ColumnElement[Any], pattern: str, *, ignore_case: bool) -> Any:
        """See :meth:`DatabaseEngine.like`: an anchored regular expression (see
        :func:`~roost.storage.engines.like_patterns.like_to_regex`)."""
        return expr.op("~")(bindparam(None, like_to_regex(pattern, ignore_case=ignore_case)))

    def json_merge(self, column: Any, patch: Mapping[str, Any]) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.json_merge`: ``||`` of JSONB objects."""
        merged: ColumnElement[Any] = func.coalesce(column, literal_column("'{}'::jsonb")).op("||")(
            cast(bindparam(None, json.dumps(dict(patch))), JSONB)
        )
        return merged

    def json_param(self, param: BindParameter[Any]) -> ColumnElement[Any]:
        """See :meth:`DatabaseEngine.json_param`: cast to ``json`` (the items' ``parsed``
        keeps its text)."""
        return cast(param, JSON)

    def expression_index_ddl(
        self, name: str, table: str, column: str, path: JsonPath
    ) -> Sequence[str]:
        """See :meth:`DatabaseEngine.expression_index_ddl`: on the JSONB copy. IF NOT
        EXISTS does not keep two sessions from creating the same index at once (the
        second fails on the catalog's unique index): a transaction lock named after the
        index makes the second wait, then find it."""
        keys = ",".join(iter_path_keys(path))
        return (
            f"SELECT pg_advisory_xact_lock(hashtext('{name}'))",
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"((({PARSED_DOC} #>> '{{{keys}}}') COLLATE \"C\"))",
        )

    # -- lists and upserts ---------------------------------------------------------------

    def in_values(self, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.in_values`: ``= ANY`` of a ``text[]`` parameter."""
        return self._any_of(column, bindparam(None, list(values), type_=_TEXT_ARRAY))

    def in_named_values(self, column: Any, param: BindParameter[Any]) -> ColumnElement[bool]:
        """See :meth:`DatabaseEngine.in_named_values`: ``= ANY`` of a ``text[]``
        parameter (its value from :meth:`values_param`, a list).

        Not ``IN`` the elements of a JSON array, as on SQLite: PostgreSQL estimates such
        a set function at 100 rows and, on a table whose statistics are not yet gathered
        (a node just synchronised), read every item of the node to match 20 ids, twice
        (0.6 ms at 1,000 items). An array parameter is an index condition whatever the
        statistics: 20 lookups of the (node, item id) index (0.14 ms)."""
        return self._any_of(column, bindparam(param.key, type_=_TEXT_ARRAY))

    @staticmethod
    def _any_of(column: Any, listed: BindParameter[Any]) -> ColumnElement[bool]:
        # Negated (~), SQLAlchemy writes NOT (x = ANY (...)), never x != ANY (...).
        result: ColumnElement[bool] = column == any_(listed)
        return result

    def values_param(self, values: Sequence[str]) -> Any:
        """See :meth:`DatabaseEngine.values_param`: the list itself, bound as ``text[]``."""
        return list(values)

    def reset_id_sequences(self, connection: Connection, tables: Sequence[Table]) -> None:
        """See :meth:`DatabaseEngine.reset_id_sequences`: each ``id`` column's sequence
        set past the largest id."""
        for each in tables:
            if "id" not in each.c or not each.c.id.primary_key:
                continue
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{each.name}', 'id'), "
                f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {each.name}"
            )

    # -- limits --------------------------------------------------------------------------

    @asynccontextmanager
    async def statement_time_limit(
        self, conn: AsyncConnection, deadline: float
    ) -> AsyncIterator[StatementLimit]:
        """See :meth:`DatabaseEngine.statement_time_limit`: ``statement_timeout``, set
        before each statement for the time left (``SET LOCAL``: it ends with the
        transaction)."""
        yield _ServerLimit(conn, deadline)

    def was_stopped(self, exc: BaseException, limit: StatementLimit) -> bool:
        """See :meth:`DatabaseEngine.was_stopped`: cancelled by the statement timeout."""
        orig = getattr(exc, "orig", None)
        return isinstance(exc, DBAPIError) and getattr(orig, "sqlstate", None) == QUERY_CANCELED

    def is_transient(self, exc: BaseException) -> bool:
        """See :meth:`DatabaseEngine.is_transient`: a serialisation failure, a deadlock
        the server broke by failing this transaction, or a lock not available."""
        orig = getattr(exc, "orig", None)
        return isinstance(exc, DBAPIError) and getattr(orig, "sqlstate", None) in TRANSIENT_STATES

    # -- whole-database copies -----------------------------------------------------------

    async def begin_snapshot(self, conn: AsyncConnection) -> None:
        """See :meth:`DatabaseEngine.begin_snapshot`: a ``REPEATABLE READ``, ``READ
        ONLY`` transaction (its snapshot is taken at its first statement; the pool
        resets both settings when the connection goes back)."""
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

    async def database_identity(self, conn: AsyncConnection) -> str:
        """See :meth:`DatabaseEngine.database_identity`: the server's start time (no two
        clusters share one), the database's oid and its name."""
        row = (
            await conn.execute(
                sql_text(
                    "SELECT pg_postmaster_start_time(), oid, datname FROM pg_database "
                    "WHERE datname = current_database()"
                )
            )
        ).one()
        return f"postgresql:{row[0].isoformat()}:{row[1]}:{row[2]}"
