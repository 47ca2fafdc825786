"""The few SQL expressions that differ between database dialects.

Everything else the stores write is dialect-neutral SQLAlchemy Core. One small class per
dialect, chosen from ``engine.dialect.name`` by :func:`dialect_for`: JSON path extraction
and type tests, array membership, pattern matching, full-text matching, the upsert
statement, expression indexes. PostgreSQL support is added later in its own class.

JSON paths reach this module as validated segment tuples (keys matching
``[A-Za-z_][A-Za-z0-9_-]*`` or non-negative integer indexes, see
:mod:`roost.storage.search`), and are written into the SQL as literals on purpose: an
expression index is used only when the query's expression is exactly the index's, which a
bound parameter never is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Table,
    and_,
    bindparam,
    func,
    literal,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import literal_column

from roost.storage.fulltext import FTS_TABLE

PathSegment = str | int
JsonPath = tuple[PathSegment, ...]
#: The JSON value kinds a filter can compare: numbers (integers and reals together),
#: strings, booleans, and arrays.
JsonKind = Literal["number", "string", "boolean", "array"]

_KEY_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SQLITE_KINDS: dict[str, tuple[str, ...]] = {
    "number": ("integer", "real"),
    "string": ("text",),
    "boolean": ("true", "false"),
    "array": ("array",),
}


def path_label(path: JsonPath) -> str:
    """The dotted form of a path (``tags.0.term``), used in names and messages."""
    return ".".join(str(s) for s in path)


def like_to_glob(pattern: str, *, ignore_case: bool) -> str:
    r"""Translate a LIKE pattern into an SQLite GLOB pattern.

    ``%`` is any run of characters, ``_`` any one character, and a backslash makes the
    next character literal. GLOB is case-sensitive, unlike SQLite's LIKE (which ignores
    ASCII case only); for ``ignore_case`` each cased letter becomes a class of its lower
    and upper case forms, which also covers non-ASCII letters.
    """
    out: list[str] = []
    escaped = False
    for ch in pattern:
        if escaped or ch not in "%_\\":
            escaped = False
            out.append(_glob_literal(ch, ignore_case=ignore_case))
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append("*")
        else:
            out.append("?")
    if escaped:  # a trailing backslash stands for itself
        out.append("\\")
    return "".join(out)


def _glob_literal(ch: str, *, ignore_case: bool) -> str:
    if ch in "*?[":
        return f"[{ch}]"
    if ignore_case:
        forms = sorted({f for f in (ch, ch.lower(), ch.upper()) if len(f) == 1})
        if len(forms) > 1:
            return "[" + "".join(forms) + "]"
    return ch


class Dialect:
    """The dialect-specific expressions the item and search stores need."""

    name = ""

    def json_value(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        """The scalar at ``path`` in the JSON ``column`` (SQL NULL when missing)."""
        raise NotImplementedError

    def json_is(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[bool]:
        """True when the value at ``path`` exists and is of JSON ``kind``."""
        raise NotImplementedError

    def json_is_bool(self, column: Any, path: JsonPath, value: bool) -> ColumnElement[bool]:
        """True when the value at ``path`` is the JSON boolean ``value``."""
        raise NotImplementedError

    def array_has_any(
        self, column: Any, path: JsonPath, kind: JsonKind, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """True when the array at ``path`` holds an element of ``kind`` equal to one of
        ``values``."""
        raise NotImplementedError

    def like(self, expr: ColumnElement[Any], pattern: str, *, ignore_case: bool) -> Any:
        """``expr`` matches the LIKE ``pattern`` (``%``, ``_``, backslash escapes)."""
        raise NotImplementedError

    def fulltext_match(
        self, item_row_id: Any, fts_query: str, *, broad: bool = False
    ) -> ColumnElement[bool]:
        """True for items whose indexed text matches the prepared full-text query.

        ``broad``: the query matches many items; write the test so that the planner
        walks the items in the query's order and tests each, rather than reading every
        match and sorting them.
        """
        raise NotImplementedError

    def fulltext_count(self, fts_query: str) -> Any:
        """A statement counting the items the prepared full-text query matches."""
        raise NotImplementedError

    def in_values(self, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
        """``column IN values`` for a list of any length, bound as one parameter."""
        return self.in_named_values(column, bindparam(None, self.values_param(values)))

    def in_named_values(self, column: Any, param: BindParameter[Any]) -> ColumnElement[bool]:
        """``column IN`` the list bound to ``param`` (its value from
        :meth:`values_param`), for a statement built once and run with many lists."""
        raise NotImplementedError

    def values_param(self, values: Sequence[str]) -> Any:
        """The value of a parameter :meth:`in_named_values` binds, for ``values``."""
        raise NotImplementedError

    def upsert(
        self,
        table: Table,
        values: dict[str, Any],
        conflict: Sequence[str],
        update: Sequence[str],
    ) -> Any:
        """An INSERT of ``values`` (usually bind parameters, for executemany) that updates
        the ``update`` columns instead when the ``conflict`` columns collide."""
        raise NotImplementedError

    def expression_index_ddl(self, name: str, table: str, column: str, path: JsonPath) -> str:
        """DDL creating (if missing) an index on exactly :meth:`json_value`'s expression."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """SQLite (3.38 or later): JSON1 functions, FTS5, GLOB."""

    name = "sqlite"

    @staticmethod
    def json_path(path: JsonPath) -> str:
        """The SQLite JSON path text for validated segments (``$.a[0]."b-c"``)."""
        parts = ["$"]
        for seg in path:
            if isinstance(seg, int):
                parts.append(f"[{seg}]")
            elif _PLAIN_KEY.match(seg):
                parts.append(f".{seg}")
            elif _KEY_SEGMENT.match(seg):
                parts.append(f'."{seg}"')
            else:  # the search validation refuses these first; never write them into SQL
                raise ValueError(f"not a plain key path segment: {seg!r}")
        return "".join(parts)

    def _path_literal(self, path: JsonPath) -> ColumnElement[Any]:
        return literal_column(f"'{self.json_path(path)}'")

    def json_value(self, column: Any, path: JsonPath) -> ColumnElement[Any]:
        """See :meth:`Dialect.json_value`: ``json_extract(column, '<path>')``."""
        return func.json_extract(column, self._path_literal(path))

    def json_is(self, column: Any, path: JsonPath, kind: JsonKind) -> ColumnElement[bool]:
        """See :meth:`Dialect.json_is`."""
        return func.json_type(column, self._path_literal(path)).in_(_SQLITE_KINDS[kind])

    def json_is_bool(self, column: Any, path: JsonPath, value: bool) -> ColumnElement[bool]:
        """See :meth:`Dialect.json_is_bool`."""
        return func.json_type(column, self._path_literal(path)) == ("true" if value else "false")

    def array_has_any(
        self, column: Any, path: JsonPath, kind: JsonKind, values: Sequence[Any]
    ) -> ColumnElement[bool]:
        """See :meth:`Dialect.array_has_any`."""
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
        """See :meth:`Dialect.like`: translated to GLOB, see :func:`like_to_glob`."""
        return expr.op("GLOB")(bindparam(None, like_to_glob(pattern, ignore_case=ignore_case)))

    def fulltext_match(
        self, item_row_id: Any, fts_query: str, *, broad: bool = False
    ) -> ColumnElement[bool]:
        """See :meth:`Dialect.fulltext_match`: the FTS5 table's rowids are item row ids.

        ``broad`` writes ``id + 0 IN (…)``: an expression SQLite cannot look rows up by,
        so the ORDER BY's index drives the query and LIMIT stops it early.
        """
        matches = (
            sql_text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query")
            .bindparams(fts_query=fts_query)
            .columns(rowid=Integer)
        )
        tested = item_row_id + literal(0, literal_execute=True) if broad else item_row_id
        result: ColumnElement[bool] = tested.in_(matches)
        return result

    def fulltext_count(self, fts_query: str) -> Any:
        """See :meth:`Dialect.fulltext_count`."""
        return sql_text(f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q").bindparams(
            q=fts_query
        )

    def in_named_values(self, column: Any, param: BindParameter[Any]) -> ColumnElement[bool]:
        """See :meth:`Dialect.in_named_values`: a JSON array expanded by ``json_each``."""
        listed = func.json_each(param).table_valued("value")
        result: ColumnElement[bool] = column.in_(select(listed.c.value))
        return result

    def values_param(self, values: Sequence[str]) -> Any:
        """See :meth:`Dialect.values_param`: the JSON array."""
        return json.dumps(list(values))

    def upsert(
        self,
        table: Table,
        values: dict[str, Any],
        conflict: Sequence[str],
        update: Sequence[str],
    ) -> Any:
        """See :meth:`Dialect.upsert`."""
        stmt = sqlite.insert(table).values(values)
        return stmt.on_conflict_do_update(
            index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update}
        )

    def expression_index_ddl(self, name: str, table: str, column: str, path: JsonPath) -> str:
        """See :meth:`Dialect.expression_index_ddl`."""
        return (
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"(json_extract({column}, '{self.json_path(path)}'))"
        )


_DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLiteDialect}


def dialect_for(engine: AsyncEngine) -> Dialect:
    """The :class:`Dialect` for ``engine``'s database.

    Raises:
        NotImplementedError: for a database Roost does not support yet.
    """
    try:
        return _DIALECTS[engine.dialect.name]()
    except KeyError:
        raise NotImplementedError(
            f"Roost's item store does not support {engine.dialect.name!r} databases yet"
        ) from None
