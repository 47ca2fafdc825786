"""A search is bounded in work: its size before any SQL, its time, its connections.

On real SQLite files. A query past a limit is refused before any statement runs (counted
with an engine event, not timed); the time budget stops a genuinely slow query; searches
held inside SQLite never keep the other stores from a connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.database import Database
from roost.storage.engine import create_engine
from roost.storage.engines import engine_for
from roost.storage.engines.sqlite import SqliteProgressLimit
from roost.storage.errors import InvalidQuery
from roost.storage.item_records import ItemInput
from roost.storage.records import TypedValue
from roost.storage.search import LIST_KEYS, SearchQuery, SearchStore, build_search
from roost.storage.search_limits import (
    MAX_ARRAY_VALUES,
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
    SearchBusy,
    SearchTimeout,
)

WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
#: Long enough that each pattern below is tried across some 4,000 characters.
LONG_TEXT = (" ".join(WORDS) + " ") * 70 + "omega"
#: 32 patterns, each matching LONG_TEXT only at its very end: every filter is tested in
#: full on every item (none fails early), each over the whole text.
SLOW_FILTERS = [
    {"path": "text", "op": "ilike", "value": f"%{a}%{b}%omega"}
    for a in WORDS[:4]
    for b in WORDS[4:]
] * 2


@dataclass
class Opened:
    """A database with one profile and node, and the items written to it."""

    db: Database
    node_id: int


async def open_database(url: str, items: int = 0, text: str = "") -> Opened:
    db = await Database.open(url)
    await db.profiles.create_profile("alice", "alice@example.org", "x")
    node = await db.nodes.get_or_create_node("alice", "pubsub.example.org", "blog")
    await db.nodes.set_analysis(node.id, "test", "blog", None)
    if items:
        await db.items.upsert_items(
            node.id,
            [
                ItemInput(f"i{n}", "", "<item/>", {"n": n, "text": text}, "", float(n))
                for n in range(items)
            ],
        )
    return Opened(db, node.id)


@pytest.fixture
async def opened(sqlite_url: str) -> AsyncIterator[Opened]:
    o = await open_database(sqlite_url, items=3, text="short")
    yield o
    await o.db.close()


@dataclass
class Activity:
    """What an engine did: statements sent, connections taken from its pool."""

    statements: list[str] = field(default_factory=list)
    parameters: list[int] = field(default_factory=list)
    checkouts: int = 0


@contextmanager
def watched(engine: AsyncEngine) -> Iterator[Activity]:
    """Record the statements and pool checkouts of ``engine`` within the block."""
    activity = Activity()

    def on_statement(*args: Any) -> None:
        activity.statements.append(args[2])
        activity.parameters.append(len(args[3]))

    def on_checkout(*_args: Any) -> None:
        activity.checkouts += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    try:
        yield activity
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(engine.sync_engine.pool, "checkout", on_checkout)


# --- limits, before any SQL ----------------------------------------------------------


def _filter(path: str, op: str, value: Any) -> dict[str, Any]:
    return {"path": path, "op": op, "value": value}


OVER_LIMITS: list[tuple[str, dict[str, Any], str]] = [
    (
        "filters",
        {"parsed": [_filter("n", "ne", i) for i in range(MAX_PARSED_FILTERS + 1)]},
        f"parsed holds {MAX_PARSED_FILTERS + 1} filters; at most {MAX_PARSED_FILTERS}",
    ),
    (
        "order keys",
        {"order_by": [{"path": f"k{i}"} for i in range(MAX_ORDER_KEYS + 1)]},
        f"order_by holds {MAX_ORDER_KEYS + 1} keys; at most {MAX_ORDER_KEYS}",
    ),
    (
        "fts characters",
        {"fts": "a" * (MAX_FTS_CHARS + 1)},
        f"fts holds {MAX_FTS_CHARS + 1} characters; at most {MAX_FTS_CHARS}",
    ),
    (
        "fts words",
        {"fts": " ".join(["lorem"] * (MAX_FTS_TERMS + 1))},
        f"fts holds {MAX_FTS_TERMS + 1} words",
    ),
    (
        "fts words in a phrase",
        {"fts": '"' + " ".join(["lorem"] * (MAX_FTS_TERMS + 1)) + '"'},
        f"at most {MAX_FTS_TERMS} are allowed",
    ),
    (
        "pattern characters",
        {"parsed": [_filter("t", "like", "a" * (MAX_PATTERN_CHARS + 1))]},
        f"the pattern holds {MAX_PATTERN_CHARS + 1} characters; at most {MAX_PATTERN_CHARS}",
    ),
    (
        "pattern wildcards",
        {"parsed": [_filter("t", "ilike", "a%_" * ((MAX_PATTERN_WILDCARDS + 2) // 2))]},
        f"wildcards (% and _); at most {MAX_PATTERN_WILDCARDS}",
    ),
    *[
        (
            f"{op} values",
            {"parsed": [_filter("n", op, list(range(MAX_ARRAY_VALUES + 1)))]},
            f"{op} holds {MAX_ARRAY_VALUES + 1} values; at most {MAX_ARRAY_VALUES}",
        )
        for op in ("in", "not_in", "overlap")
    ],
    *[
        (
            f"{key} entries",
            {key: [f"x{i}" for i in range(MAX_LIST_ENTRIES + 1)]},
            f"{key} holds {MAX_LIST_ENTRIES + 1} entries; at most {MAX_LIST_ENTRIES}",
        )
        for key in LIST_KEYS
    ],
    (
        "path segments",
        {"parsed": [_filter(".".join(["a"] * (MAX_PATH_SEGMENTS + 1)), "eq", 1)]},
        f"segments; at most {MAX_PATH_SEGMENTS}",
    ),
    (
        "path characters",
        {"order_by": [{"path": "a" * (MAX_PATH_CHARS + 1)}]},
        f"holds {MAX_PATH_CHARS + 1} characters; at most {MAX_PATH_CHARS}",
    ),
    (
        "operand characters",
        {"parsed": [_filter("t", "eq", "a" * (MAX_STRING_CHARS + 1))]},
        f"the value holds {MAX_STRING_CHARS + 1} characters; at most {MAX_STRING_CHARS}",
    ),
    (
        "array value characters",
        {"parsed": [_filter("t", "in", ["a", "a" * (MAX_STRING_CHARS + 1)])]},
        f"a value of in holds {MAX_STRING_CHARS + 1} characters",
    ),
    (
        "list entry characters",
        {"item_ids": ["a" * (MAX_STRING_CHARS + 1)]},
        f"an entry of item_ids holds {MAX_STRING_CHARS + 1} characters",
    ),
]


@pytest.mark.parametrize(
    ("query", "message"),
    [pytest.param(q, m, id=name) for name, q, m in OVER_LIMITS],
)
async def test_a_query_past_a_limit_is_refused_before_any_sql(
    opened: Opened, query: dict[str, Any], message: str
) -> None:
    with watched(opened.db.engine) as activity, pytest.raises(InvalidQuery) as refused:
        await opened.db.search.search(query)
    assert message in str(refused.value)
    assert activity.statements == []
    assert activity.checkouts == 0


@pytest.mark.parametrize(
    "query",
    [
        {"parsed": [_filter("n", "ne", i) for i in range(50_000)]},
        {"fts": "lorem " * 100_000},
        {"order_by": [{"field": "created"}] * 3_000},
        {"profiles": ["alice"] * 1_000_000},
        {"parsed": [_filter("t", "like", "%" * 100_000)]},
        {"parsed": [_filter("n", "in", list(range(1_000_000)))]},
    ],
    ids=["50k filters", "100k fts words", "3k order keys", "1M profiles", "100k %", "1M in"],
)
async def test_the_hostile_queries_are_invalid_arguments_with_short_messages(
    opened: Opened, query: dict[str, Any]
) -> None:
    with watched(opened.db.engine) as activity, pytest.raises(InvalidQuery) as refused:
        await opened.db.search.search(query)
    assert "at most" in str(refused.value)
    assert len(str(refused.value)) < 300
    assert activity.statements == []


@pytest.mark.parametrize(
    "query",
    [
        {"profiles": "p" * 100_000},
        {"parsed": [{"path": "a", "op": "eq", "value": "v", "x" * 100_000: 1}]},
        {"parsed": [_filter("a", "in", [1, "b" * 100_000])]},
        {"order_by": [{"field": "f" * 100_000}]},
        {"x" * 100_000: 1},
    ],
    ids=["list", "filter keys", "mixed kinds", "order field", "unknown key"],
)
def test_messages_never_echo_a_huge_input(query: dict[str, Any]) -> None:
    with pytest.raises(InvalidQuery) as refused:
        SearchQuery.from_mapping(query)
    assert len(str(refused.value)) < 300


def test_escaped_wildcards_are_not_counted() -> None:
    pattern = "100\\%" * MAX_PATTERN_WILDCARDS + "%"
    query = SearchQuery.from_mapping({"parsed": [_filter("t", "like", pattern)]})
    assert query.parsed[0].value == pattern


@pytest.mark.parametrize("every_filter_an_array", [False, True], ids=["mixed", "arrays"])
async def test_the_largest_query_allowed_answers(
    opened: Opened, every_filter_an_array: bool
) -> None:
    """Every limit at its maximum at once: the SQL stays within SQLite's own limits
    (expression depth, ORDER BY terms, bound parameters: some 32,100 with only arrays)."""
    db = opened.db
    await db.nodes.set_analysis(opened.node_id, "test", "blog", "plain")
    deep = ".".join(f"k{i}" for i in range(MAX_PATH_SEGMENTS))
    doc: dict[str, Any] = {"n": 7, "tags": ["red"], "t": "x" * 250, "long": "y" * 4096}
    inner: Any = doc.setdefault("k0", {})
    for i in range(1, MAX_PATH_SEGMENTS - 1):
        inner = inner.setdefault(f"k{i}", {})
    inner[f"k{MAX_PATH_SEGMENTS - 1}"] = "deep"
    words = [f"w{i:02d}" for i in range(MAX_FTS_TERMS)]
    await db.items.upsert_items(
        opened.node_id,
        [
            ItemInput("match", "", "<item/>", doc, " ".join(words)),
            ItemInput("other", "", "<item/>", {**doc, "n": 8}, " ".join(words)),
        ],
    )
    others = [f"x{i}" for i in range(MAX_LIST_ENTRIES - 1)]
    wanted = {
        "profiles": "alice",
        "services": "pubsub.example.org",
        "nodes": "blog",
        "types": "blog",
        "subtypes": "plain",
        "item_ids": "match",
    }
    fixed: list[dict[str, Any]] = [
        _filter(deep, "eq", "deep"),
        _filter("t", "like", "x" * (MAX_PATTERN_CHARS - MAX_PATTERN_WILDCARDS) + "%" * 16),
        _filter("t", "ilike", "X" * 240 + "_" * 10 + "%" * (MAX_PATTERN_WILDCARDS - 10)),
        _filter("long", "eq", "y" * MAX_STRING_CHARS),
        _filter("tags", "overlap", ["red", *others]),
        _filter("n", "not_in", list(range(100, 100 + MAX_ARRAY_VALUES))),
    ]
    arrays = [
        fixed[-2 + i % 2]
        if i % 3
        else _filter("n", "in", list(range(7 - i, 7 + MAX_ARRAY_VALUES - i)))
        for i in range(MAX_PARSED_FILTERS)
    ]
    parsed = arrays if every_filter_an_array else fixed + arrays[len(fixed) :]
    assert len(parsed) == MAX_PARSED_FILTERS
    query: dict[str, Any] = {
        **{key: [*others, value] for key, value in wanted.items()},
        "fts": " ".join(words),
        "parsed": parsed,
        "order_by": [{"path": f"o{i}"} for i in range(MAX_ORDER_KEYS - 1)] + [{"field": "updated"}],
    }
    assert len(query["fts"]) <= MAX_FTS_CHARS
    with watched(db.engine) as activity:
        hits = await db.search.search(query)
    assert [h.item_id for h in hits] == ["match"]
    assert max(activity.parameters) > (32_000 if every_filter_an_array else 25_000)


# --- the time budget -----------------------------------------------------------------


async def test_a_search_over_its_budget_is_stopped_and_the_connection_stays_usable(
    sqlite_url: str,
) -> None:
    opened = await open_database(sqlite_url, items=200, text=LONG_TEXT)
    await opened.db.close()
    # One connection only: the statements after the timeout run on the very connection
    # the progress handler was installed on.
    engine = create_engine(sqlite_url, pool_size=1, max_overflow=0)
    try:
        store = SearchStore(engine, time_budget=0.01)
        query = {"parsed": SLOW_FILTERS, "limit": 1000}
        with pytest.raises(SearchTimeout) as stopped:
            await store.search(query)
        assert isinstance(stopped.value, InvalidQuery)
        assert "took longer than 0.01 s" in str(stopped.value)
        # A full scan (far more than PROGRESS_STEPS steps), long after the deadline:
        # it would be interrupted if the handler were still installed.
        scan = SearchQuery.from_mapping({"parsed": [_filter("n", "ge", 0)], "limit": 1000})
        async with engine.connect() as conn:
            rows = (await conn.execute(build_search(scan, engine_for(engine)))).all()
        assert len(rows) == 200
        # The same slow query, given the time it needs, answers in full.
        patient = SearchStore(engine, time_budget=600)
        assert len(await patient.search(query)) == 200
    finally:
        await engine.dispose()


#: A search that reads every item (the order key has no index) of a 300-item node: many
#: times PROGRESS_STEPS steps, so that its progress handler is called.
SCAN = {
    "parsed": [{"path": "n", "op": "ge", "value": 100}],
    "order_by": [{"path": "n", "direction": "desc"}],
    "limit": 5,
}


class Hold:
    """Holds each search inside SQLite, in its progress handler, until released.

    Counts the searches held at once: with the store's gate, never more than its slots.
    With ``past_budget``, a search released is past its time budget, whatever the time.
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, wanted: int, *, past_budget: bool = False
    ) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.peak = 0
        self.reached = asyncio.Event()
        self._wanted = wanted
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        original = SqliteProgressLimit.over
        hold = self

        def over(budget: SqliteProgressLimit) -> int:
            with hold._lock:
                hold.inside += 1
                hold.peak = max(hold.peak, hold.inside)
                if hold.inside >= hold._wanted:
                    hold._loop.call_soon_threadsafe(hold.reached.set)
            try:
                hold.release.wait(timeout=60)
            finally:
                with hold._lock:
                    hold.inside -= 1
            if past_budget:
                # Held as long as the test wanted: past its budget, however fast the
                # rest of the test ran meanwhile.
                budget.deadline = min(budget.deadline, time.monotonic() - 1.0)
            return original(budget)

        monkeypatch.setattr(SqliteProgressLimit, "over", over)

    async def wait_until_reached(self) -> None:
        await asyncio.wait_for(self.reached.wait(), timeout=60)


async def test_other_stores_answer_while_a_search_runs_past_its_budget(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = await open_database(sqlite_url, items=300, text="short")
    db = opened.db
    try:
        store = SearchStore(db.engine, time_budget=0.01)
        hold = Hold(monkeypatch, wanted=1, past_budget=True)
        search = asyncio.create_task(store.search(SCAN))
        try:
            await hold.wait_until_reached()
            # The search is inside SQLite now, on its connection: everything else goes on.
            await db.values.set_value(None, "ns", "k", "s", "v")
            assert await db.values.get_values(None, "ns", ["k"]) == {"k": TypedValue("s", "v")}
            assert await db.items.count_items(opened.node_id) == 300
            assert (await db.nodes.get_node_by_id(opened.node_id)).type == "blog"
            assert not search.done()
        finally:
            hold.release.set()
        with pytest.raises(SearchTimeout):
            await search
    finally:
        await db.close()


# --- the concurrency budget ----------------------------------------------------------


async def test_many_searches_take_two_connections_and_leave_the_rest(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = await open_database(sqlite_url, items=300, text="short")
    url, migration = opened.db.url, opened.db.migration
    await opened.db.close()
    # Three connections in all: without the gate, the searches would take every one,
    # and the value store would wait out the pool timeout.
    engine = create_engine(url, pool_size=3, max_overflow=0, pool_timeout=10)
    db = Database(engine, url, migration)
    try:
        store = SearchStore(engine, max_concurrent=2)
        hold = Hold(monkeypatch, wanted=2)
        searches = [asyncio.create_task(store.search(SCAN)) for _ in range(12)]
        try:
            await hold.wait_until_reached()
            for n in range(5):
                await db.values.set_value(None, "ns", f"k{n}", "u", n)
            assert len(await db.values.get_values(None, "ns")) == 5
            assert not any(s.done() for s in searches)
            assert hold.inside == 2
        finally:
            hold.release.set()
        newest = [f"i{n}" for n in range(299, 294, -1)]
        for hits in await asyncio.gather(*searches):
            assert [h.item_id for h in hits] == newest
        assert hold.peak == 2
    finally:
        await db.close()


async def test_a_search_waiting_too_long_for_its_turn_is_refused(opened: Opened) -> None:
    store = SearchStore(opened.db.engine, max_concurrent=1, max_wait=0.05)
    with watched(opened.db.engine) as activity:
        async with store.gate.slot():
            with pytest.raises(SearchBusy) as busy:
                await store.search({})
        assert isinstance(busy.value, InvalidQuery)
        assert "1 searches are running already" in str(busy.value)
        assert activity.statements == []
    assert [h.item_id for h in await store.search({})] == ["i2", "i1", "i0"]


async def test_a_caller_cancelled_while_waiting_for_its_turn_runs_nothing(opened: Opened) -> None:
    store = SearchStore(opened.db.engine, max_concurrent=1)
    with watched(opened.db.engine) as activity:
        async with store.gate.slot():
            waiting = asyncio.create_task(store.search({}))
            await asyncio.sleep(0)  # one turn of the loop: it is waiting for the slot
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert await store.search({"item_ids": ["i1"]})
        # Only the second search ran SQL: the cancelled one never took the slot.
        assert len([s for s in activity.statements if "pubsub_items" in s]) == 1
