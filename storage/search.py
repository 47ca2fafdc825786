"""Cache search: the query model, its validation, and the SQL it becomes.

A query is data (a mapping, as a D-Bus ``a{sv}`` gives it) and never SQL: every key,
operator, path and value is checked by :meth:`SearchQuery.from_mapping`, which raises
:class:`~roost.storage.errors.InvalidQuery` with a message a person can act on. Values are
bound as parameters; paths, checked against a strict grammar, are written as literals so
that expression indexes apply (see :mod:`roost.storage.engines`).

Semantics of the ``parsed`` filters (each ``{path, op, value}``):

- ``path`` is a dotted key path into the parsed data: segments are keys
  (``[A-Za-z_][A-Za-z0-9_-]*``) or non-negative integers, which index arrays
  (``tags.0``).
- Values compare as JSON values do in Python, kind with kind: numbers as numbers
  (integers and reals together), strings as strings (by code point), booleans only with
  ``eq``/``ne``/``in``/``not_in``/``contains``/``overlap``. A value of another JSON kind
  than the operand, or a missing one, never matches, for any operator (``ne`` and
  ``not_in`` included). JSON null is not an operand.
- ``lt`` is strict, ``le`` is ``<=``, ``between [low, high]`` includes both ends.
- ``in``/``not_in``/``overlap`` take a list of values of one kind; an empty ``in`` or
  ``overlap`` list matches nothing, an empty ``not_in`` is refused.
- ``like`` (case-sensitive) and ``ilike`` (ignoring case, non-ASCII letters included)
  take a pattern where ``%`` is any run of characters, ``_`` one character, and a
  backslash makes the next character literal; they match strings only.
- ``contains``: the value at the path is an array holding the operand;
  ``overlap``: an array sharing at least one element with the operand list.

``fts`` is full text over each item's indexed text. Its words and ``"quoted phrases"``
are all required (AND) and matched as plain words: FTS5 syntax (``OR``, ``NOT``, ``*``,
``NEAR``, column filters) is not interpreted, so no input can make a malformed query.
Terms without a letter or digit are dropped.

Results are ordered by ``order_by`` (keys of the parsed data, or the ``created`` /
``updated`` fields; items lacking a key come after those having it in either direction),
then newest first; without ``order_by``, newest first (``created`` descending, then the
most recently stored). ``limit`` defaults to :data:`DEFAULT_SEARCH_LIMIT` and may not pass
:data:`MAX_SEARCH_LIMIT`, which keeps every answer bounded.

The work a search asks for is bounded too, before any SQL is written: how many filters,
order keys, full-text words, array values and list entries it holds, how long and how
wild its patterns, paths and strings are (the limits of
:mod:`roost.storage.search_limits`, each refused with :class:`InvalidQuery` naming it).
:class:`SearchStore` then runs the SQL within a time budget, and at most a few searches
at once, so that the other stores always have connections.
"""

from __future__ import annotations

import asyncio
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.cancel_safety import completes_on_cancel
from roost.storage.engines import DatabaseEngine, JsonKind, JsonPath, engine_for, path_label
from roost.storage.errors import InvalidQuery
from roost.storage.item_pages import RECORD_COLUMNS
from roost.storage.item_records import SearchHit
from roost.storage.models import Profile, PubsubItem, PubsubNode
from roost.storage.search_limits import (
    MAX_ARRAY_VALUES,
    MAX_CONCURRENT_SEARCHES,
    MAX_FTS_CHARS,
    MAX_FTS_TERMS,
    MAX_LIST_ENTRIES,
    MAX_ORDER_KEYS,
    MAX_PARSED_FILTERS,
    MAX_PATH_CHARS,
    MAX_PATH_SEGMENTS,
    MAX_PATTERN_CHARS,
    MAX_PATTERN_WILDCARDS,
    MAX_STRING_CHARS,
    SEARCH_TIME_BUDGET,
    SEARCH_WAIT,
    SearchGate,
    at_most,
    cut,
    shown,
    time_budget,
)

DEFAULT_SEARCH_LIMIT = 100
MAX_SEARCH_LIMIT = 1000
#: A full-text term matching more items than this is answered by walking the items
#: newest first through the ``created`` index rather than by sorting its matches.
BROAD_MATCH_COUNT = 20_000

_items: Table = PubsubItem.__table__  # type: ignore[assignment]
_nodes: Table = PubsubNode.__table__  # type: ignore[assignment]
_profiles: Table = Profile.__table__  # type: ignore[assignment]

LIST_KEYS = ("profiles", "services", "nodes", "types", "subtypes", "item_ids")
QUERY_KEYS = (*LIST_KEYS, "fts", "parsed", "order_by", "limit", "offset")
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
ORDERED_OPS = ("lt", "le", "gt", "ge", "between")
LIST_OPS = ("in", "not_in", "overlap")
OPERATORS = (*COMPARE_OPS, "in", "not_in", "between", "like", "ilike", "contains", "overlap")
ORDER_FIELDS = ("created", "updated")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")
_FTS_TERM = re.compile(r'"([^"]*)(?:"|$)|([^\s"]+)')
_WORD = re.compile(r"[^\W_]+")
_INT64 = 2**63


def parse_path(path: Any) -> JsonPath:
    """Check a dotted key path and split it into segments (integers for array indexes).

    Raises:
        InvalidQuery: the path is not a string of plain keys and indexes, or is longer or
            deeper than :data:`MAX_PATH_CHARS` or :data:`MAX_PATH_SEGMENTS` allow.
    """
    if not isinstance(path, str) or not path:
        raise InvalidQuery(
            f"a path must be a non-empty string like 'author.name', not {shown(path)}"
        )
    at_most(len(path), MAX_PATH_CHARS, f"path {shown(path)}", "characters")
    at_most(path.count(".") + 1, MAX_PATH_SEGMENTS, f"path {shown(path)}", "segments")
    segments: list[str | int] = []
    for seg in path.split("."):
        if _INDEX.match(seg):
            segments.append(int(seg))
        elif _KEY.match(seg):
            segments.append(seg)
        else:
            raise InvalidQuery(
                f"path {path!r}: segment {seg!r} is neither a key (letters, digits, '_', '-', "
                "not starting with a digit or '-') nor an array index (a non-negative integer)"
            )
    return tuple(segments)


def pattern_wildcards(pattern: str) -> int:
    """How many wildcards (``%``, ``_``) a LIKE pattern holds, escaped ones not counted."""
    count, escaped = 0, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "%_":
            count += 1
    return count


def value_kind(value: Any) -> JsonKind | None:
    """The JSON kind of a scalar operand, or None when it is not a usable scalar."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number" if -_INT64 <= value < _INT64 else None
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string" if "\x00" not in value else None
    return None


def fts_terms(text: Any) -> tuple[str, ...]:
    """Turn user text into the words and phrases a full-text search requires, all of them.

    Raises:
        InvalidQuery: not a string, no word to search for, or more characters or words
            than :data:`MAX_FTS_CHARS` and :data:`MAX_FTS_TERMS` allow.
    """
    if not isinstance(text, str):
        raise InvalidQuery(f"fts must be a string, not {type(text).__name__}")
    at_most(len(text), MAX_FTS_CHARS, "fts", "characters", "search for a few distinctive words")
    # SQLite's FTS5 reads its query as a C string: a NUL (or any control character) would
    # cut or break it, so they separate words like spaces do.
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    terms = [m.group(1) if m.group(1) is not None else m.group(2) for m in _FTS_TERM.finditer(text)]
    kept = tuple(t.strip() for t in terms if any(c.isalnum() for c in t))
    if not kept:
        raise InvalidQuery(f"fts {text!r} holds no word to search for")
    at_most(
        sum(len(_WORD.findall(t)) for t in kept),
        MAX_FTS_TERMS,
        "fts",
        "words (each word of a quoted phrase counts)",
        "keep the most distinctive ones",
    )
    return kept


@dataclass(frozen=True, slots=True)
class ParsedFilter:
    """One validated filter on the parsed data.

    Attributes:
        path: the path's segments.
        op: the operator.
        value: the operand (a tuple for list operators and ``between``).
        kind: the JSON kind the operand compares with.
    """

    path: JsonPath
    op: str
    value: Any
    kind: JsonKind

    @classmethod
    def from_mapping(cls, spec: Any) -> ParsedFilter:
        """Validate one ``{path, op, value}`` mapping.

        Raises:
            InvalidQuery: a missing or unknown key, bad path, unknown operator, a value
                of the wrong type for the operator, or one past a limit (array values,
                string or pattern length, pattern wildcards).
        """
        if not isinstance(spec, Mapping) or set(spec) != {"path", "op", "value"}:
            raise InvalidQuery(
                "each parsed filter is a mapping with exactly path, op and value, "
                f"not {shown(spec)}"
            )
        path, op, value = parse_path(spec["path"]), spec["op"], spec["value"]
        where = f"filter on {path_label(path)!r}"
        if op not in OPERATORS:
            raise InvalidQuery(
                f"{where}: unknown operator {shown(op)}; use one of {', '.join(OPERATORS)}"
            )
        if op in LIST_OPS or op == "between":
            if not isinstance(value, list | tuple):
                raise InvalidQuery(f"{where}: {op} takes a list of values, not {shown(value)}")
            at_most(
                len(value),
                MAX_ARRAY_VALUES,
                f"{where}: {op}",
                "values",
                "split them over several searches",
            )
            kinds = {value_kind(v) for v in value}
            if None in kinds or len(kinds) > 1:
                raise InvalidQuery(
                    f"{where}: {op} takes values of one kind (strings, numbers or booleans), "
                    f"not {shown(value)}"
                )
            if op == "between" and len(value) != 2:
                raise InvalidQuery(f"{where}: between takes [low, high], not {shown(value)}")
            if op == "not_in" and not value:
                raise InvalidQuery(f"{where}: not_in needs at least one value")
            kind: JsonKind = next((k for k in kinds if k is not None), "string")
            value = tuple(value)
            if kind == "string":
                longest = max(map(len, value), default=0)
                at_most(longest, MAX_STRING_CHARS, f"{where}: a value of {op}", "characters")
        else:
            found = value_kind(value)
            if found is None:
                raise InvalidQuery(
                    f"{where}: {op} takes a string (without NUL), a finite number or a boolean, "
                    f"not {shown(value)}"
                )
            kind = found
        if op in ORDERED_OPS and kind == "boolean":
            raise InvalidQuery(f"{where}: {op} compares strings or numbers, not booleans")
        if op in ("like", "ilike"):
            if kind != "string":
                raise InvalidQuery(f"{where}: {op} takes a pattern string, not {shown(value)}")
            advice = "match on a shorter, more distinctive part"
            at_most(len(value), MAX_PATTERN_CHARS, f"{where}: the pattern", "characters", advice)
            at_most(
                pattern_wildcards(value),
                MAX_PATTERN_WILDCARDS,
                f"{where}: the pattern",
                "wildcards (% and _)",
                advice,
            )
        elif kind == "string" and op not in LIST_OPS and op != "between":
            at_most(len(value), MAX_STRING_CHARS, f"{where}: the value", "characters")
        return cls(path, op, value, kind)


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One sort key: a path into the parsed data, or a field (``created``/``updated``)."""

    path: JsonPath | None
    field: str | None
    descending: bool

    @classmethod
    def from_mapping(cls, spec: Any) -> OrderKey:
        """Validate one ``{path|field, direction}`` mapping.

        Raises:
            InvalidQuery: both or neither of path and field, an unknown field or direction.
        """
        if not isinstance(spec, Mapping) or not set(spec) <= {"path", "field", "direction"}:
            raise InvalidQuery(
                "each order_by entry is a mapping of path or field, and direction, "
                f"not {shown(spec)}"
            )
        if ("path" in spec) == ("field" in spec):
            raise InvalidQuery(f"an order_by entry needs either path or field: {shown(dict(spec))}")
        direction = spec.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise InvalidQuery(
                f"order_by direction must be 'asc' or 'desc', not {shown(direction)}"
            )
        if "field" in spec:
            if spec["field"] not in ORDER_FIELDS:
                raise InvalidQuery(
                    f"order_by field must be one of {', '.join(ORDER_FIELDS)}, "
                    f"not {shown(spec['field'])}"
                )
            return cls(None, spec["field"], direction == "desc")
        return cls(parse_path(spec["path"]), None, direction == "desc")


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidQuery(f"{key} must be a list of strings, not {shown(value)}")
    at_most(len(value), MAX_LIST_ENTRIES, key, "entries", "split them over several searches")
    if not all(isinstance(v, str) for v in value):
        raise InvalidQuery(f"{key} must be a list of strings, not {shown(value)}")
    at_most(max(map(len, value), default=0), MAX_STRING_CHARS, f"an entry of {key}", "characters")
    return tuple(value)


def _count(key: str, value: Any, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidQuery(f"{key} must be a non-negative integer, not {shown(value)}")
    if maximum is not None and value > maximum:
        raise InvalidQuery(f"{key} may be at most {maximum}, not {value}; page with offset")
    return value


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated cache search; build it with :meth:`from_mapping`.

    The list filters are None when absent; an empty list is the same as absent.
    """

    profiles: tuple[str, ...] | None = None
    services: tuple[str, ...] | None = None
    nodes: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    subtypes: tuple[str, ...] | None = None
    item_ids: tuple[str, ...] | None = None
    fts: tuple[str, ...] | None = None
    parsed: tuple[ParsedFilter, ...] = ()
    order_by: tuple[OrderKey, ...] = ()
    limit: int = DEFAULT_SEARCH_LIMIT
    offset: int = 0

    @classmethod
    def from_mapping(cls, query: Mapping[str, Any]) -> SearchQuery:
        """Validate a query mapping (the keys of the module documentation).

        Raises:
            InvalidQuery: with what is wrong and what is expected; for a query past one of
                the limits of :mod:`roost.storage.search_limits`, which limit.
        """
        unknown = sorted(str(k) for k in set(query) - set(QUERY_KEYS))
        if unknown:
            raise InvalidQuery(
                f"unknown search key(s) {cut(', '.join(unknown), 120)}; "
                f"known: {', '.join(QUERY_KEYS)}"
            )
        parsed = query.get("parsed", [])
        order_by = query.get("order_by", [])
        for key, value in (("parsed", parsed), ("order_by", order_by)):
            if not isinstance(value, list | tuple):
                raise InvalidQuery(f"{key} must be a list of mappings, not {shown(value)}")
        # Every count first, each one cheap: nothing longer than a limit is read further.
        at_most(
            len(parsed),
            MAX_PARSED_FILTERS,
            "parsed",
            "filters",
            "put the values of one path into a single in or overlap filter, or search "
            "within fewer profiles, services, nodes or types",
        )
        at_most(len(order_by), MAX_ORDER_KEYS, "order_by", "keys")
        lists = {k: _str_list(k, query[k]) or None for k in LIST_KEYS if k in query}
        return cls(
            **lists,
            fts=fts_terms(query["fts"]) if "fts" in query else None,
            parsed=tuple(ParsedFilter.from_mapping(f) for f in parsed),
            order_by=tuple(OrderKey.from_mapping(o) for o in order_by),
            limit=_count("limit", query.get("limit", DEFAULT_SEARCH_LIMIT), MAX_SEARCH_LIMIT),
            offset=_count("offset", query.get("offset", 0)),
        )


def _filter_condition(d: DatabaseEngine, f: ParsedFilter) -> ColumnElement[bool]:
    col, path, op, kind = _items.c.parsed, f.path, f.op, f.kind
    if op in ("contains", "overlap"):
        values = (f.value,) if op == "contains" else f.value
        return d.array_has_any(col, path, kind, values) if values else false()
    if op == "in" and not f.value:
        return false()
    if kind == "boolean":
        wanted = {f.value} if op in ("eq", "ne") else set(f.value)
        if op in ("ne", "not_in"):
            wanted = {True, False} - wanted
        return or_(false(), *(d.json_is_bool(col, path, b) for b in wanted))
    value = d.json_value(col, path, kind)

    def operand(v: Any) -> Any:
        return d.json_operand(v, kind)

    conditions: dict[str, Any] = {
        "eq": lambda: value == operand(f.value),
        "ne": lambda: value != operand(f.value),
        "lt": lambda: value < operand(f.value),
        "le": lambda: value <= operand(f.value),
        "gt": lambda: value > operand(f.value),
        "ge": lambda: value >= operand(f.value),
        "between": lambda: value.between(operand(f.value[0]), operand(f.value[1])),
        "in": lambda: value.in_([operand(v) for v in f.value]),
        "not_in": lambda: value.not_in([operand(v) for v in f.value]),
        "like": lambda: d.like(value, f.value, ignore_case=False),
        "ilike": lambda: d.like(value, f.value, ignore_case=True),
    }
    # The equality comes first so that an expression index on the value is usable.
    return and_(conditions[op](), d.json_is(col, path, kind))


def build_search(
    query: SearchQuery, dialect: DatabaseEngine, *, walk_created: bool = False
) -> Select[Any]:
    """The SELECT statement answering ``query`` (columns in :class:`SearchHit` order).

    ``walk_created`` reads the items newest first through the ``created`` index, testing
    each against the other conditions, instead of reading every match and sorting: the
    faster plan for a full-text term matching many items.
    """
    stmt = (
        select(
            # The item as GetItems gives it (``parsed`` as stored text, not decoded).
            *RECORD_COLUMNS,
            _profiles.c.name,
            _nodes.c.service,
            _nodes.c.name,
            _nodes.c.type,
            _nodes.c.subtype,
        )
        .join_from(_items, _nodes, _nodes.c.id == _items.c.node_id)
        .join(_profiles, _profiles.c.id == _nodes.c.profile_id)
    )
    for column, values in (
        (_profiles.c.name, query.profiles),
        (_nodes.c.service, query.services),
        (_nodes.c.name, query.nodes),
        (_nodes.c.type, query.types),
        (_nodes.c.subtype, query.subtypes),
        (_items.c.item_id, query.item_ids),
    ):
        if values:
            stmt = stmt.where(dialect.in_values(column, values))
    if query.fts is not None:
        stmt = stmt.where(dialect.fulltext_match(_items.c.id, query.fts, broad=walk_created))
    for f in query.parsed:
        stmt = stmt.where(_filter_condition(dialect, f))
    order: list[Any] = []
    for key in query.order_by:
        exprs = (
            dialect.json_order(_items.c.parsed, key.path)
            if key.path is not None
            else [_items.c[key.field or "created"]]
        )
        if key.path is not None:
            order.append(exprs[0].is_(None))  # missing keys last, in either direction
        order += [expr.desc() if key.descending else expr.asc() for expr in exprs]
    created: Any = _items.c.created
    if query.fts is not None:
        created = dialect.fulltext_order_key(created, broad=walk_created)
    order += [created.desc(), _items.c.id.desc()]
    return stmt.order_by(*order).limit(query.limit).offset(query.offset)


class SearchStore:
    """Searches across every cached item (the Database facade's ``db.search``).

    Each search runs within a time budget and takes one of a few slots (see
    :mod:`roost.storage.search_limits`), so that searches never hold every connection of
    the engine's pool. A caller cancelled while its search waits for a slot leaves at
    once; one cancelled while its SQL runs waits for it to end (within the budget), as
    for every store call.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        time_budget: float = SEARCH_TIME_BUDGET,
        max_concurrent: int = MAX_CONCURRENT_SEARCHES,
        max_wait: float = SEARCH_WAIT,
    ) -> None:
        """Bind the store to ``engine`` (its database engine gives the dialect's SQL).

        Args:
            engine: the engine.
            time_budget: seconds of database work one search may take.
            max_concurrent: searches running at once.
            max_wait: seconds a search waits for its turn before it is refused.
        """
        self._engine = engine
        self._dialect = engine_for(engine)
        self.time_budget = time_budget
        self.gate = SearchGate(max_concurrent, max_wait)
        # Set while the full-text index is known to be in step with the items; a
        # full-text search waits for it (the check runs after start on a large cache).
        self.fulltext_checked = asyncio.Event()
        self.fulltext_checked.set()

    async def search_items(self, query: SearchQuery) -> list[SearchHit]:
        """Run a validated search.

        Args:
            query: from :meth:`SearchQuery.from_mapping`.

        Returns:
            At most ``query.limit`` hits, in the query's order.

        Raises:
            SearchTimeout: the search took longer than its time budget.
            SearchBusy: it waited too long for its turn.
        """
        if query.fts is not None and not self.fulltext_checked.is_set():
            # Its answer would come from an index that may have drifted: wait for the
            # check (and a rebuild, if one is needed) started with the daemon.
            await self.fulltext_checked.wait()
        async with self.gate.slot():
            return await self._run(query)

    @completes_on_cancel
    async def _run(self, query: SearchQuery) -> list[SearchHit]:
        async with self._engine.connect() as conn, time_budget(conn, self.time_budget) as sql:
            walk = False
            if query.fts is not None and not query.order_by:
                # Sorting every match of a broad term by date reads each matching row;
                # walking the date index stops after ``limit`` matches instead.
                count = self._dialect.fulltext_count(query.fts, BROAD_MATCH_COUNT + 1)
                matches = (await sql.execute(count)).scalar()
                walk = (matches or 0) > BROAD_MATCH_COUNT
            result = await sql.execute(build_search(query, self._dialect, walk_created=walk))
            return [SearchHit(*row) for row in result]

    async def search(self, query: Mapping[str, Any]) -> list[SearchHit]:
        """Validate a query mapping and run it.

        Args:
            query: the query keys of the module documentation.

        Returns:
            The hits, as :meth:`search_items` returns them.

        Raises:
            InvalidQuery: the query is malformed or past a limit, and before any SQL ran;
                or (its subclasses) the search ran out of time or waited too long.
        """
        return await self.search_items(SearchQuery.from_mapping(query))
