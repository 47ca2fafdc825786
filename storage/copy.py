"""Copy a whole Roost database to another one (SQLite to PostgreSQL and back), checked.

:func:`copy_database` reads the source in one snapshot (a running daemon's database can
be copied: what it writes meanwhile is simply not in the copy), brings the target to the
schema head with the same migrations as any database, and copies every table in
foreign-key order, a batch of rows at a time, ids kept (so that every reference holds),
in one transaction on the target. Then it reads the copy back and compares each table's
row count and checksum (:mod:`roost.storage.table_checksum`) with the source's.

What is not copied follows the items by itself: SQLite's full-text table is filled by its
triggers, PostgreSQL's ``search_vector`` is a generated column, and each node's
``item_count`` is written as zero and counted by the target's triggers as its items
arrive (then compared with the source's like any column). An item's
``search_text`` is written in the form the target's index takes
(:meth:`~roost.storage.engines.base.DatabaseEngine.indexed_text`: PostgreSQL folds
diacritics), and compared in that form. The ``ix_parsed_*`` indexes are not copied
either: the daemon creates those it needs when it starts.

A target that holds any row is refused unless ``replace`` is given (its rows are then
deleted first, in the same transaction); a copy onto the source itself is always
refused. No message, log line or report carries a password: URLs are shown with it
hidden.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, Text, bindparam, delete, func, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.storage.database import Database
from roost.storage.engine import create_engine, resolve_database_url
from roost.storage.engines import DatabaseEngine, UnsupportedDatabase, engine_for
from roost.storage.errors import StorageError
from roost.storage.item_records import parsed_text
from roost.storage.migrate import HEAD_REVISION, VERSION_TABLE, prepare_database
from roost.storage.models import Base, PubsubItem, PubsubNode
from roost.storage.table_checksum import TableChecksum

logger = logging.getLogger(__name__)

#: Rows read, written and checked at a time: memory stays bounded whatever the size.
BATCH_ROWS = 1_000
#: How long reaching the target may take before the copy gives up.
CONNECT_TIMEOUT = 30.0
#: Roost's tables, parents before children.
TABLES: tuple[Table, ...] = tuple(Base.metadata.sorted_tables)

_ITEMS: Table = Base.metadata.tables[PubsubItem.__tablename__]
_NODES: Table = Base.metadata.tables[PubsubNode.__tablename__]
# Bound under another name than the column's: the statement sets the column itself.
_PARSED_PARAM = "parsed_json"

#: Called after each batch with the table's name and how many of its rows are copied.
Progress = Callable[[str, int], None]


class CopyError(StorageError):
    """A copy of the database could not be made, or does not match its source."""


class InvalidTarget(CopyError, ValueError):
    """The target is no database Roost can copy to (a malformed URL, another kind of
    database, an in-memory one, the source itself)."""


class TargetNotEmpty(CopyError):
    """The target holds rows, and ``replace`` was not given.

    Attributes:
        counts: the rows found, by table (only tables that hold some).
    """

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = counts


class TargetUnavailable(CopyError):
    """The target's server cannot be reached, or refuses the connection."""


class CopyFailed(CopyError):
    """A statement of the copy failed (the target refused a row, the connection broke);
    the target's transaction was rolled back."""


class CopyMismatch(CopyError):
    """The copy, read back, differs from the source in some table.

    Attributes:
        tables: the tables that differ.
    """

    def __init__(self, message: str, tables: Sequence[str]) -> None:
        super().__init__(message)
        self.tables = tuple(tables)


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table copied and checked.

    Attributes:
        table: the table's name.
        rows: its rows (in the source's snapshot, and read back from the copy).
        checksum: SHA-256 of its rows in primary-key order, the same on both sides.
        seconds: how long copying and checking it took.
    """

    table: str
    rows: int
    checksum: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What :func:`copy_database` did.

    Attributes:
        target: the target's URL, its password hidden.
        tables: every table, in the order copied.
        seconds: the whole copy's time, the schema's creation and the check included.
    """

    target: str
    tables: tuple[TableCopy, ...]
    seconds: float


class _Transfer:
    """How one table's rows go from the source to the target, and are summed."""

    def __init__(self, table: Table, target: DatabaseEngine) -> None:
        self.table = table
        self.columns = tuple(table.columns)
        self.read = select(*self.columns).order_by(*table.primary_key.columns)
        self._names = [column.name for column in self.columns]
        self._indexed_text = target.indexed_text
        self._search_text = self._names.index("search_text") if table is _ITEMS else -1
        self._parsed = self._names.index("parsed") if table is _ITEMS else -1
        if table is _ITEMS:
            # As the item store writes it: JSON text (None as SQL NULL, not JSON null).
            parsed = target.json_param(bindparam(_PARSED_PARAM, type_=Text()))
            self.write = insert(table).values(parsed=parsed)
        else:
            self.write = insert(table)

    def as_stored(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The source's rows as the target will hold them."""
        if self._search_text < 0:
            return [tuple(row) for row in rows]
        at, fold = self._search_text, self._indexed_text
        return [(*row[:at], fold(row[at]), *row[at + 1 :]) for row in rows]

    def parameters(self, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The insert's parameters for rows given by :meth:`as_stored`."""
        names = self._names
        found = [dict(zip(names, row, strict=True)) for row in rows]
        if self._parsed >= 0:
            for values in found:
                values[_PARSED_PARAM] = parsed_text(values.pop("parsed"))
        if self.table is _NODES:
            # The target's triggers count each node's items as they are copied.
            for values in found:
                values["item_count"] = 0
        return found

    def take(self, batch: Sequence[Sequence[Any]], checksum: TableChecksum) -> list[dict[str, Any]]:
        """Sum a batch of the source's rows and give the insert's parameters for it."""
        rows = self.as_stored(batch)
        checksum.add(rows)
        return self.parameters(rows)


def target_url(raw: str) -> URL:
    """The URL of a copy's target, checked (never echoed: it may hold a password).

    Raises:
        InvalidTarget: not a URL, another database than SQLite and PostgreSQL, an
            in-memory SQLite database, or an SQLite file given by a relative path.
    """
    if not raw.strip():
        raise InvalidTarget(
            "give the URL of the database to copy to (sqlite:////path/to/roost.sqlite or "
            "postgresql://user@host/dbname)"
        )
    try:
        url = resolve_database_url(raw)
        dialect = engine_for(url)
    except (SQLAlchemyError, ValueError) as err:
        # Only the engines' own message: a parser's could quote the URL, password and all.
        detail = str(err) if isinstance(err, UnsupportedDatabase) else "not a database URL"
        raise InvalidTarget(
            f"cannot copy to that URL: {detail} (write sqlite:////path/to/roost.sqlite or "
            "postgresql://user@host/dbname)"
        ) from None
    if dialect.single_file:
        path = dialect.database_file(url)
        if path is None:
            raise InvalidTarget(
                "an in-memory database would be gone when the copy ends: give a file "
                "(sqlite:////path/to/roost.sqlite)"
            )
        if not path.is_absolute():
            raise InvalidTarget(
                f"give the SQLite file's absolute path (sqlite:////path/to/{path.name}): a "
                "relative one would be taken from the daemon's working directory"
            )
        if path.exists() and not path.is_file():
            raise InvalidTarget(f"{path} exists and is not a file")
    return url


async def copy_database(
    source: Database | AsyncEngine,
    target: str | URL,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy every row of ``source`` into the database at ``target``, then check the copy.

    Args:
        source: the database to copy (an open :class:`Database`, or an engine on a
            database at the schema head); it is only read, in one snapshot.
        target: the URL of the database to copy to: a PostgreSQL database that exists
            (empty, or with Roost's schema), or an SQLite file (created 0600, in a
            directory created 0700 if missing).
        replace: empty the target first when it holds rows (they are lost).
        progress: called after each batch of rows (see :data:`Progress`).

    Returns:
        Each table's rows, checksum and time.

    Raises:
        InvalidTarget: see :func:`target_url`; also when the target is the source.
        TargetUnavailable: the target's server cannot be reached or refuses the user.
        TargetNotEmpty: the target holds rows and ``replace`` is false.
        DatabaseTooNew, UnmanagedDatabase: the target has a schema this Roost will not
            touch (see :func:`~roost.storage.migrate.prepare_database`).
        CopyFailed: a statement of the copy failed; the target holds no copied row.
        CopyMismatch: the copy read back differs from the source.
    """
    started = time.perf_counter()
    source_engine = source.engine if isinstance(source, Database) else source
    url = target if isinstance(target, URL) else target_url(target)
    shown = url.render_as_string(hide_password=True)
    dialect = engine_for(url)
    try:
        engine = create_engine(url)
    except OSError as err:
        raise InvalidTarget(f"cannot create {shown}: {err.strerror or err}") from None
    except SQLAlchemyError as err:
        raise InvalidTarget(f"cannot open {shown}: {err}") from None
    try:
        async with _reaching(shown):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await _refuse_same_database(source_engine, engine)
            await prepare_database(engine, url)
        copied = await _copy_tables(source_engine, engine, dialect, shown, replace, progress)
        tables = await _check_copy(engine, dialect, shown, copied)
    finally:
        await engine.dispose()
    report = CopyReport(shown, tables, time.perf_counter() - started)
    logger.info(
        "copied the database to %s: %d rows in %.1f s",
        shown,
        sum(table.rows for table in tables),
        report.seconds,
    )
    return report


@asynccontextmanager
async def _reaching(shown: str) -> AsyncIterator[None]:
    """Failures to reach the target, as :class:`TargetUnavailable`."""
    try:
        yield
    except TimeoutError:
        raise TargetUnavailable(
            f"{shown} gave no answer within {CONNECT_TIMEOUT:.0f} s; check the host and port"
        ) from None
    except OSError as err:
        raise TargetUnavailable(
            f"cannot reach {shown}: {err.strerror or err}; check that its server runs and "
            "that the host and port are right"
        ) from None
    except DBAPIError as err:
        raise TargetUnavailable(
            f"{shown} refused: {_reason(err)} (the database and its user must exist, the "
            "user may create tables in it)"
        ) from None


def _reason(err: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's decoration."""
    return str(getattr(err, "orig", None) or err)


async def _refuse_same_database(source: AsyncEngine, target: AsyncEngine) -> None:
    async with source.connect() as conn:
        mine = await engine_for(source).database_identity(conn)
    async with target.connect() as conn:
        theirs = await engine_for(target).database_identity(conn)
    if mine == theirs:
        raise InvalidTarget(
            "the target is the database being copied: give another database (its rows "
            "would be copied onto themselves, or deleted by replace)"
        )


async def _copy_tables(
    source: AsyncEngine,
    target: AsyncEngine,
    dialect: DatabaseEngine,
    shown: str,
    replace: bool,
    progress: Progress | None,
) -> list[TableCopy]:
    copied: list[TableCopy] = []
    async with source.connect() as src:
        await engine_for(source).begin_snapshot(src)
        await _check_source_revision(src)
        try:
            async with target.begin() as dst:
                await _empty_target(dst, shown, replace)
                for table in TABLES:
                    copied.append(await _copy_table(src, dst, _Transfer(table, dialect), progress))
                await dst.run_sync(dialect.reset_id_sequences, TABLES)
        except DBAPIError as err:
            failed = TABLES[len(copied)].name if len(copied) < len(TABLES) else "(sequences)"
            raise CopyFailed(
                f"copying table {failed} to {shown} failed: {_reason(err)}; nothing was "
                "copied (the copy is one transaction)"
            ) from None
        await src.rollback()
    return copied


async def _check_source_revision(src: AsyncConnection) -> None:
    found = list((await src.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalars())
    if found != [HEAD_REVISION]:
        raise CopyError(
            f"the source database is at revision {', '.join(found) or 'none'}, not this "
            f"Roost's {HEAD_REVISION}: open it with this Roost first"
        )


async def _empty_target(dst: AsyncConnection, shown: str, replace: bool) -> None:
    counts: dict[str, int] = {}
    for table in TABLES:
        count = int(await dst.scalar(select(func.count()).select_from(table)) or 0)
        if count:
            counts[table.name] = count
    if not counts:
        return
    if not replace:
        held = ", ".join(f"{name}: {count} rows" for name, count in counts.items())
        raise TargetNotEmpty(
            f"{shown} already holds data ({held}); copy into an empty database, or replace "
            "its rows (they are lost)",
            counts,
        )
    for table in reversed(TABLES):  # children before their parents
        await dst.execute(delete(table))
    logger.info("emptied %s before copying into it (%s)", shown, counts)


async def _copy_table(
    src: AsyncConnection, dst: AsyncConnection, transfer: _Transfer, progress: Progress | None
) -> TableCopy:
    started = time.perf_counter()
    checksum = TableChecksum(transfer.columns)
    result = await src.stream(transfer.read)
    async for batch in result.partitions(BATCH_ROWS):
        # Off the event loop: a batch's values take a tenth of a second to sum, which
        # the daemon's other callers would otherwise wait out.
        parameters = await asyncio.to_thread(transfer.take, batch, checksum)
        await dst.execute(transfer.write, parameters)
        if progress is not None:
            progress(transfer.table.name, checksum.rows)
    name = transfer.table.name
    seconds = time.perf_counter() - started
    logger.debug("copied %s: %d rows in %.2f s", name, checksum.rows, seconds)
    return TableCopy(name, checksum.rows, checksum.hexdigest(), seconds)


async def _check_copy(
    target: AsyncEngine,
    dialect: DatabaseEngine,
    shown: str,
    copied: Sequence[TableCopy],
) -> tuple[TableCopy, ...]:
    checked: list[TableCopy] = []
    differ: dict[str, str] = {}
    async with target.connect() as conn:
        await dialect.begin_snapshot(conn)
        for sent, table in zip(copied, TABLES, strict=True):
            started = time.perf_counter()
            found = TableChecksum(tuple(table.columns))
            result = await conn.stream(select(*table.columns).order_by(*table.primary_key.columns))
            async for batch in result.partitions(BATCH_ROWS):
                await asyncio.to_thread(found.add, batch)
            digest = found.hexdigest()
            if (found.rows, digest) != (sent.rows, sent.checksum):
                differ[sent.table] = (
                    f"{sent.table} ({sent.rows} rows copied, {found.rows} read back; checksum "
                    f"{sent.checksum[:12]}… against {digest[:12]}…)"
                )
            seconds = sent.seconds + time.perf_counter() - started
            checked.append(TableCopy(sent.table, sent.rows, sent.checksum, seconds))
        await conn.rollback()
    if differ:
        raise CopyMismatch(
            f"the copy in {shown} differs from the source: {'; '.join(differ.values())}; do "
            "not use it (copy again with replace)",
            list(differ),
        )
    return tuple(checked)
