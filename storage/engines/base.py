"""What every database engine gives the stores: its SQL forms and its capabilities.

One :class:`DatabaseEngine` subclass per dialect (SQLite, PostgreSQL), as Synapse's
``storage/engines`` has: everything that differs between the two lives in them
(connection set-up, the upsert form, JSON path expressions, pattern matching, the
full-text index and its query syntax, statement time limits, the migration transaction,
integrity checks), so that no store and nothing outside :mod:`roost.storage` asks which
database it runs on. Pick one with :func:`roost.storage.engines.engine_for`.

JSON paths reach an engine as validated segment tuples (keys matching
``[A-Za-z_][A-Za-z0-9_-]*`` or non-negative integer indexes, see
:mod:`roost.storage.search`), and are written into the SQL as literals on purpose: an
expression index is used only when the query's expression is exactly the index's, which
a bound parameter never is.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import BindParameter, ColumnElement, Table, bindparam
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from roost.storage.leases import ProfileLeases
    from roost.storage.reads import ReadRunner
    from roost.storage.writes import WriteRunner

PathSegment = str | int
JsonPath = tuple[PathSegment, ...]
#: The JSON value kinds a filter can compare: numbers (integers and reals together),
#: strings, booleans, and arrays.
JsonKind = Literal["number", "string", "boolean", "array"]

KEY_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def path_label(path: JsonPath) -> str:
    """The dotted form of a path (``tags.0.term``), used in names and messages."""
    return ".".join(str(s) for s in path)


def checked_key(segment: str) -> str:
    """``segment`` if it is a key the search validation lets through, else ValueError.

    The validation refuses other keys first; this keeps anything else out of SQL text.
    """
    if not KEY_SEGMENT.match(segment):
        raise ValueError(f"not a plain key path segment: {segment!r}")
    return segment


class DatabaseEngine(ABC):
    """One database dialect: its capabilities and the SQL forms the stores need.

    Capabilities are class attributes, so that a caller asks what a database can do
    rather than which one it is.

    Attributes:
        name: the SQLAlchemy dialect name.
        single_file: the database is one local file that a copy backs up (the migration
            copies it aside before an upgrade).
        fulltext_can_drift: the full-text index is kept by triggers that a crash can
            leave behind the items: check it at start and rebuild it when it drifted.
        shares_database: several daemons may use one database at once, each serving its
            own profiles under a lease.
        single_writer: one transaction writes at a time, the others waiting in the
            database's busy handler, which is neither fair nor unbounded: the item store
            queues its large writes in the daemon instead, in order.
    """

    name: str = ""
    #: The dialect's INSERT construct, which has ``on_conflict_do_update``.
    insert: Any = None
    #: The async driver Roost runs this database with, and the plain or synchronous
    #: driver names a user may write instead.
    async_driver: str = ""
    other_drivers: tuple[str, ...] = ()
    single_file: bool = False
    fulltext_can_drift: bool = False
    shares_database: bool = False
    single_writer: bool = False

    # -- connections ---------------------------------------------------------------------

    def async_url(self, url: URL) -> URL:
        """``url`` with Roost's async driver, when it names a plain or synchronous one."""
        if url.drivername in self.other_drivers:
            return url.set(drivername=self.async_driver)
        return url

    @abstractmethod
    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        """The async engine for ``url``, its connections set up as Roost needs them."""

    def database_file(self, url: URL) -> Path | None:
        """The local file holding the database at ``url``; None when there is none."""
        return None

    @abstractmethod
    def read_runner(self, engine: AsyncEngine, url: URL) -> ReadRunner:
        """What runs the item store's reads on this database."""

    @abstractmethod
    def write_runner(self, engine: AsyncEngine, url: URL) -> WriteRunner:
        """What runs the stores' write transactions on this database (see
        :mod:`roost.storage.writes`)."""

    @abstractmethod
    def open_leases(self, engine: AsyncEngine, url: URL) -> ProfileLeases:
        """The profile leases of a daemon on this database (see
        :mod:`roost.storage.leases`); nothing is opened before the first lease."""

    def client_memory(self) -> int | None:
        """Bytes the database's client library holds in this process outside Python's
        objects (caches, compiled statements); None where it does not say."""
        return None

    # -- migrations ----------------------------------------------------------------------

    @abstractmethod
    def migration_transaction(self, connection: Connection) -> AbstractContextManager[None]:
        """A block in which migrations run: one transaction, the DDL inside it atomic."""

    def check_after_migration(self, connection: Connection) -> None:
        """Raise RuntimeError when the migration just run left the database inconsistent."""
        return None

    render_as_batch: bool = False

    def internal_table(self, table_name: str) -> bool:
        """True for a table the database keeps for itself (not Roost's schema)."""
        return False

    # -- full text -----------------------------------------------------------------------

    @abstractmethod
    def fulltext_match(
        self, item_row_id: Any, terms: Sequence[str], *, broad: bool = False
    ) -> ColumnElement[bool]:
        """True for items whose indexed text holds every one of ``terms``.

        Each term is a word or a phrase (words in that order), matched as plain words:
        no query syntax of the database is read from them.

        ``broad``: the terms match many items; write the test so that the planner walks
        the items in the query's order and tests each, rather than reading every match
        and sorting them.
        """

    def fulltext_order_key(self, created: Any, *, broad: bool) -> ColumnElement[Any]:
        """The items' ``created`` column as a full-text search sorts by it: with
        ``broad``, the column itself, so that its index can be walked; otherwise a form the
        engine's planner cannot walk an index by, where it would otherwise pick that walk
        for a rare term."""
        key: ColumnElement[Any] = created
        return key

    @abstractmethod
    def fulltext_count(self, terms: Sequence[str], cap: int) -> Any:
        """A statement counting the items that :meth:`fulltext_match` would match, up
        to ``cap``: it stops reading matches there, so that telling a broad term from a
        rare one costs at most ``cap`` index entries, not every match."""

    def indexed_text(self, text: str) -> str:
        """The form of an item's ``search_text`` stored for the index (as given, unless
        the database's index cannot fold case and diacritics itself)."""
        return text

    async def fulltext_is_consistent(self, conn: AsyncConnection) -> bool:
        """Whether the full-text index is in step with the items (see
        :attr:`fulltext_can_drift`)."""
        return True

    async def rebuild_fulltext(self, conn: AsyncConnection) -> None:
        """Rebuild the full-text index from the items."""
        return None

    async def mark_clean_stop(self, conn: AsyncConnection) -> None:
        """Record, as the last write before the database is closed, that the full-text
        index was in step with the items (where :attr:`fulltext_can_drift`)."""
        return None

    async def take_clean_stop(self, conn: AsyncConnection) -> bool:
        """Whether the database was last closed by :meth:`mark_clean_stop`, forgetting
        it (a stop that does not mark it again, a crash, leaves nothing to find)."""
        return False

    # -- JSON and patterns ---------------------------------------------------------------

    @abstractmethod
    def json_value(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[Any]:
        """The value at ``path`` in the JSON ``column``, to compare with a Python value
        of ``kind`` (``number`` or ``string``); SQL NULL when missing. Only meaningful
        where :meth:`json_is` holds for that kind."""

    def json_operand(self, value: Any, kind: JsonKind) -> Any:
        """``value`` (of ``kind``) as the operand :meth:`json_value` is compared with."""
        return value

    @abstractmethod
    def json_order(self, column: Any, path: JsonPath) -> list[ColumnElement[Any]]:
        """Expressions ordering items by the value at ``path``: numbers before strings,
        strings by code point; the first is NULL when the path is missing."""

    @abstractmethod
    def json_is(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[bool]:
        """True when the value at ``path`` exists and is of JSON ``kind``."""

    @abstractmethod
    def json_is_bool(self, column: Any, path: JsonPath, value: bool) -> ColumnElement[bool]:
        """True when the value at ``path`` is the JSON boolean ``value``."""

    @abstractmethod
    def array_has_any(
        self, column: Any, path: JsonPath, kind: JsonKind, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """True when the array at ``path`` holds an element of ``kind`` equal to one of
        ``values``."""

    @abstractmethod
    def like(self, expr: ColumnElement[Any], pattern: str, *, ignore_case: bool) -> Any:
        """``expr`` matches the LIKE ``pattern`` (``%``, ``_``, backslash escapes);
        ``ignore_case`` folds every cased letter, non-ASCII ones included."""

    @abstractmethod
    def json_merge(self, column: Any, patch: Mapping[str, Any]) -> ColumnElement[Any]:
        """``column`` (a JSON object) with the keys of ``patch`` set, in one expression,
        so that two writers merging different keys never lose each other's."""

    def json_param(self, param: BindParameter[Any]) -> ColumnElement[Any]:
        """A parameter holding JSON text, as a value of a JSON column."""
        return param

    @abstractmethod
    def expression_index_ddl(
        self, name: str, table: str, column: str, path: JsonPath
    ) -> Sequence[str]:
        """The statements creating (if missing) an index on the expression
        :meth:`json_value` writes for a string at ``path``, run in one transaction."""

    # -- lists and upserts ---------------------------------------------------------------

    def in_values(self, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
        """``column IN values`` for a list of any length, bound as one parameter."""
        return self.in_named_values(column, bindparam(None, self.values_param(values)))

    @abstractmethod
    def in_named_values(self, column: Any, param: BindParameter[Any]) -> ColumnElement[bool]:
        """``column IN`` the list bound to ``param`` (its value from :meth:`values_param`),
        for a statement built once and run with many lists."""

    def values_param(self, values: Sequence[str]) -> Any:
        """The value of a parameter :meth:`in_named_values` binds, for ``values``: the
        list as a JSON array, which both databases expand in SQL."""
        return json.dumps(list(values))

    def upsert(
        self,
        table: Table,
        values: dict[str, Any],
        conflict: Sequence[str],
        update: Sequence[str],
    ) -> Any:
        """An INSERT of ``values`` (usually bind parameters, for executemany) that updates
        the ``update`` columns instead when the ``conflict`` columns collide (the
        dialect's own ``INSERT … ON CONFLICT DO UPDATE``, from :attr:`insert`)."""
        stmt = self.insert(table).values(values)
        return stmt.on_conflict_do_update(
            index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update}
        )

    def reset_id_sequences(self, connection: Connection, tables: Sequence[Table]) -> None:
        """After rows were written with explicit ids: make new rows' ids follow them."""
        return None

    # -- limits --------------------------------------------------------------------------

    @abstractmethod
    def statement_time_limit(
        self, conn: AsyncConnection, deadline: float
    ) -> AbstractAsyncContextManager[StatementLimit]:
        """A block whose statements on ``conn`` stop once ``time.monotonic()`` passes
        ``deadline`` (call :meth:`StatementLimit.before_statement` before each)."""

    @abstractmethod
    def was_stopped(self, exc: BaseException, limit: StatementLimit) -> bool:
        """Whether ``exc`` is a statement stopped by ``limit``."""

    @abstractmethod
    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a failure that the same transaction, tried again a little
        later, may well not meet: another writer held a lock past the wait the database
        allows, or a conflict the database resolved by failing this transaction."""

    # -- whole-database copies -----------------------------------------------------------

    @abstractmethod
    async def begin_snapshot(self, conn: AsyncConnection) -> None:
        """Begin on ``conn`` (a fresh connection: nothing run on it yet) a read-only
        transaction whose reads all see the database as one snapshot, while other
        connections go on writing."""

    @abstractmethod
    async def database_identity(self, conn: AsyncConnection) -> str:
        """What tells the database ``conn`` is on from every other one: two URLs naming
        the same database (another spelling of a path, another host name for a server)
        give the same identity."""


class StatementLimit:
    """A time limit on one connection's statements (see
    :meth:`DatabaseEngine.statement_time_limit`)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        #: Set when the limit stopped a statement.
        self.interrupted = False

    async def before_statement(self) -> None:
        """Called before each statement of the block (a server limit is set per
        statement)."""


def iter_path_keys(path: JsonPath) -> Iterator[str]:
    """The segments of ``path`` as text, keys checked (see :func:`checked_key`)."""
    for seg in path:
        yield str(seg) if isinstance(seg, int) else checked_key(seg)
