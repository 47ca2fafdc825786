"""Reads run whole: on an SQLite file at once or on a reader thread, through the async
engine otherwise, the same answers; one snapshot a read; readers never write; a short read
past its budget is run again on a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, make_url, select, text

from roost.storage import reads
from roost.storage.errors import RowNotFound
from roost.storage.item_records import ItemInput
from roost.storage.items import ItemStore
from roost.storage.models import PubsubItem
from roost.storage.reads import EngineReads, ReadConnection, SqliteReads
from tests.fixtures.postgres import PostgresServer
from tests.storage.test_items import Stores, open_stores

ITEMS = 300
_items = PubsubItem.__table__
COUNT = select(func.count()).select_from(_items)
# Millions of virtual machine steps, no rows read: past a short read's budget.
SLOW = text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
    "SELECT count(*) FROM c"
)


async def open_filled_stores(url: str) -> Stores:
    """The stores of a new database whose blog node holds ITEMS items."""
    stores = await open_stores(url)
    rows = [
        ItemInput(f"i{n:03d}", "a@example.org", f"<item id='i{n:03d}'/>", {"n": n}, f"w{n}")
        for n in range(ITEMS)
    ]
    await stores.items.upsert_items(stores.nodes["blog"], rows)
    return stores


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Stores]:
    stores = await open_filled_stores(f"sqlite:///{tmp_path / 'roost.sqlite'}")
    yield stores
    await stores.database.close()


REQUESTS: list[dict[str, Any]] = [
    {},
    {"max_items": 20},
    {"max_items": 20, "after": ""},
    {"max_items": 20, "after": "i100"},
    {"max_items": 20, "after": "i290"},
    {"max_items": 20, "after": "i299"},
    {"max_items": 20, "before": ""},
    {"max_items": 20, "before": "i010"},
    {"max_items": 20, "before": "i000"},
    {"index": 280},
    {"index": 400, "max_items": 5},
    {"item_ids": ["i007", "i250", "i003", "nope"]},
    {"item_ids": ["i007", "i250", "i003"], "after": "i007", "max_items": 1},
    {"item_ids": ["i007", "i250", "i003"], "before": ""},
    {"max_reply_items": 50, "max_reply_bytes": 10_000},
    {"max_reply_items": 500, "max_reply_bytes": 200},
    {"item_ids": ["i001"], "max_reply_items": 10, "max_reply_bytes": 10},
    {"item_ids": ["i009", "i001", "i005", "i003"], "max_reply_items": 2, "max_reply_bytes": 999},
    {"item_ids": ["i009", "i001", "i005", "i003"], "max_reply_items": 9, "max_reply_bytes": 45},
]


async def test_every_runner_pages_alike(db: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    node = db.nodes["blog"]
    through_engine = ItemStore(db.engine, EngineReads(db.engine))
    expected = [await through_engine.get_items(node, **request) for request in REQUESTS]
    assert [await db.items.get_items(node, **request) for request in REQUESTS] == expected
    # Every short read past its budget: each is run again on a thread, with one answer.
    monkeypatch.setattr(reads, "SHORT_READ_STEPS", 0)
    fresh = ItemStore(db.engine, db.database.reads)
    assert [await fresh.get_items(node, **request) for request in REQUESTS] == expected
    for store in (through_engine, db.items):
        with pytest.raises(RowNotFound):
            await store.get_items(node, after="unknown", max_items=3)
        assert await store.count_items(node) == ITEMS
        assert (await store.get_item(node, "i005")).parsed == {"n": 5}  # type: ignore[union-attr]


async def test_parsed_is_read_as_stored_text(db: Stores) -> None:
    page = await db.items.get_items(db.nodes["blog"], item_ids=["i042"])
    assert page.items[0].parsed_json == '{"n":42}'
    assert page.items[0].parsed == {"n": 42}


async def test_a_short_read_past_its_budget_runs_again_on_a_thread(db: Stores) -> None:
    runner = db.database.reads
    assert isinstance(runner, SqliteReads)
    where: list[str] = []

    def reading(stmt: Any) -> Any:
        def read(conn: ReadConnection) -> int:
            where.append(threading.current_thread().name)
            found = conn.row(stmt, {})
            assert found is not None
            return int(found[0])

        return read

    overran: list[bool] = []
    # A short read within its budget runs at once, on the event loop's thread.
    assert (
        await runner.run(reading(COUNT), short=True, overran=lambda: overran.append(True)) == ITEMS
    )
    assert where == [threading.current_thread().name] and not overran
    # Hundreds of thousands of steps are far past it: stopped, and run again on a thread.
    where.clear()
    slow = reading(SLOW)
    assert await runner.run(slow, short=True, overran=lambda: overran.append(True)) == 300_000
    assert where[0] == threading.current_thread().name
    assert where[1].startswith("roost-read") and overran == [True]
    # A read not said to be short always runs on a thread.
    where.clear()
    assert await runner.run(reading(COUNT)) == ITEMS
    assert where[0].startswith("roost-read")


async def test_a_large_node_s_pages_go_to_a_thread_once_one_overran(
    db: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = db.database.reads
    asked: list[bool] = []
    run = runner.run

    async def recording(*args: Any, short: bool = False, overran: Any = None) -> Any:
        asked.append(short)
        return await run(*args, short=short, overran=overran)

    monkeypatch.setattr(runner, "run", recording)
    store = ItemStore(db.engine, runner)
    node = db.nodes["blog"]
    first = await store.get_items(node, max_items=20)
    monkeypatch.setattr(reads, "SHORT_READ_STEPS", 0)
    assert await store.get_items(node, max_items=20) == first
    assert await store.get_items(node, max_items=20) == first
    assert await store.get_items(node) == await store.get_items(node, max_items=ITEMS)
    assert asked == [True, True, False, False, False]


async def test_a_read_sees_one_snapshot(db: Stores) -> None:
    path = Path(db.engine.url.database or "")
    counted = threading.Event()
    written = threading.Event()

    def twice(conn: ReadConnection) -> tuple[int, int]:
        first = conn.row(COUNT, {})
        counted.set()
        assert written.wait(10)
        second = conn.row(COUNT, {})
        assert first is not None and second is not None
        return first[0], second[0]

    def write() -> None:
        assert counted.wait(10)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(
            "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, parsed, "
            "search_text, created, updated) VALUES (?, 'new', '', 10000, '<item/>', NULL, '', "
            "0, 0)",
            (db.nodes["news"],),
        )
        conn.commit()
        conn.close()
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert await db.database.reads.run(twice) == (ITEMS, ITEMS)
    writer.join()
    assert await db.items.count_items(db.nodes["news"]) == 1


async def test_readers_cannot_write(db: Stores) -> None:
    def write(conn: ReadConnection) -> None:
        conn.rows(text("DELETE FROM pubsub_items RETURNING id"), {})  # type: ignore[arg-type]

    for short in (True, False):
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.database.reads.run(write, short=short)
    assert await db.items.count_items(db.nodes["blog"]) == ITEMS


async def test_a_cancelled_caller_leaves_its_read_to_finish(db: Stores) -> None:
    started, release = threading.Event(), threading.Event()

    def blocked(conn: ReadConnection) -> int:
        found = conn.row(COUNT, {})
        started.set()
        assert release.wait(10)
        assert found is not None
        return int(found[0])

    call = asyncio.create_task(db.database.reads.run(blocked))
    assert await asyncio.to_thread(started.wait, 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    release.set()
    # The read ended its transaction on its thread: writers and readers go on.
    await asyncio.wait_for(
        db.items.upsert_items(db.nodes["news"], [ItemInput("x", "", "<item/>", None, "")]), 5
    )
    assert await db.items.count_items(db.nodes["news"]) == 1


async def test_an_id_list_is_cut_where_the_reply_bound_is(db: Stores) -> None:
    node, ids = db.nodes["blog"], ["i009", "i001", "i005", "i003"]
    # Each item's XML is 17 bytes; the first always fits.
    for items, size, expected in ((2, 999, 2), (9, 45, 2), (9, 51, 3), (9, 1, 1), (9, 999, 4)):
        page = await db.items.get_items(
            node, item_ids=ids, max_reply_items=items, max_reply_bytes=size
        )
        assert [i.item_id for i in page.items] == ["i001", "i003", "i005", "i009"][:expected]
        assert (page.count, page.first_index, page.complete) == (4, 0, expected == 4)


async def test_the_engine_goes_on_after_postgresql_ends_every_session(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    """A restarted server (here: every session of the database ended at once) costs
    neither a read nor the next write an error: connections the server closed are
    replaced, a read that met one is run again on a new one."""
    stores = await open_stores(postgresql_url)
    try:
        node = stores.nodes["blog"]
        await stores.items.upsert_items(node, [ItemInput("a", "", "<item id='a'/>", None, "")])
        # Every connection of the pool has served once, and is back in the pool.
        await asyncio.gather(*(stores.items.count_items(node) for _ in range(8)))
        database = make_url(postgresql_url).database
        ended = await asyncio.to_thread(
            postgres_server.psql,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )
        assert int(ended) >= 1
        assert await stores.items.count_items(node) == 1
        await stores.items.upsert_items(node, [ItemInput("b", "", "<item id='b'/>", None, "")])
        assert {i.item_id for i in (await stores.items.get_items(node)).items} == {"a", "b"}
    finally:
        await stores.database.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_busy_time_s_connections_are_kept_for_the_next(database_url: str) -> None:
    """Connections opened for a burst stay open for the next one: none is closed as soon
    as it is given back, so busy bus clients do not make the daemon reconnect."""
    stores = await open_stores(database_url)
    opened = 0

    def count_connect(*_args: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(stores.engine.sync_engine, "connect", count_connect)
    burst = 15

    async def hold_a_connection(all_in: asyncio.Event, holding: list[int]) -> None:
        async with stores.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            holding.append(1)
            if len(holding) == burst:
                all_in.set()
            await all_in.wait()

    try:
        opened_after = []
        for _ in range(3):
            all_in, holding = asyncio.Event(), []
            await asyncio.wait_for(
                asyncio.gather(*(hold_a_connection(all_in, holding) for _ in range(burst))),
                timeout=60,
            )
            opened_after.append(opened)
        # The first burst opened what it needed beyond what the set-up had opened; the
        # next two reused them.
        assert opened_after[0] <= burst
        assert opened_after[1] == opened_after[2] == opened_after[0]
    finally:
        await stores.database.close()


async def test_a_short_read_on_postgresql_sends_one_statement(postgresql_url: str) -> None:
    """Through the engine (where a short read goes when its own connection failed), a
    page of a few items is one round trip to the server: no ``BEGIN`` and ``ROLLBACK``
    around it (at ``READ COMMITTED`` they give it no snapshot it lacks); a longer read,
    which may stream through a cursor, keeps its transaction."""
    stores = await open_stores(postgresql_url)
    items = ItemStore(stores.engine, EngineReads(stores.engine, short_autocommit=True))
    # What asyncpg sends outside prepared statements: BEGIN, ROLLBACK (a page itself is a
    # prepared statement, which its query loggers do not see).
    sent: list[str] = []

    def logged(query: Any) -> None:
        sent.append(query.query.upper())

    def log_queries(_dbapi: Any, record: Any, _proxy: Any) -> None:
        record.driver_connection.add_query_logger(logged)

    try:
        node = stores.nodes["blog"]
        rows = [ItemInput(f"i{n:03d}", "", f"<item id='i{n:03d}'/>", None, "") for n in range(30)]
        await stores.items.upsert_items(node, rows)
        event.listen(stores.engine.sync_engine, "checkout", log_queries)
        page = await items.get_items(node, max_items=20, after="i004")
        await asyncio.sleep(0)  # asyncpg tells its query loggers at the loop's next turn
        assert [i.item_id for i in page.items] == [f"i{n:03d}" for n in range(5, 25)]
        assert page.count == 30
        assert not [q for q in sent if q.startswith(("BEGIN", "ROLLBACK"))]
        sent.clear()
        whole = await items.get_items(node)
        await asyncio.sleep(0)
        assert len(whole.items) == 30
        # The logger sees what a transaction sends: the test can fail.
        assert any(q.startswith("BEGIN") for q in sent)
    finally:
        await stores.database.close()
