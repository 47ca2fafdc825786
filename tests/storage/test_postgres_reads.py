"""Short reads on PostgreSQL run on asyncpg connections of their own: the same answers as
through the engine, never more connections than allowed, no engine connection taken, a
failed connection costing the reader nothing, a cancelled caller leaving its connection
fit for the next read, and nothing left open at close."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Integer, bindparam, event, func, literal, select
from sqlalchemy.exc import DBAPIError

from roost.storage.errors import RowNotFound
from roost.storage.items import ItemStore
from roost.storage.postgres_reads import PostgresReads
from roost.storage.reads import EngineReads, ReadConnection
from tests.fixtures.postgres import PostgresServer
from tests.storage.test_items import Stores
from tests.storage.test_reads import COUNT, ITEMS, REQUESTS, open_filled_stores

pytestmark = pytest.mark.postgresql

#: How long the statement a cancelled caller leaves behind sleeps on the server.
SLEEP_S = 0.3


class Connections:
    """Opens the runner's connections under a name of the test's own, so that the
    server's view of them (``pg_stat_activity``) is this runner's alone."""

    def __init__(self, url: str, server: PostgresServer) -> None:
        self.url = url
        self.server = server
        self.name = f"roost-test-{uuid.uuid4().hex[:12]}"
        self.opened = 0
        self.refuse = False

    async def connect(self) -> Any:
        if self.refuse:
            raise OSError("connection refused (by the test)")
        self.opened += 1
        return await asyncpg.connect(self.url, server_settings={"application_name": self.name})

    async def on_server(self) -> int:
        """The runner's connections the server has."""
        found = await asyncio.to_thread(
            self.server.psql,
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{self.name}'",
        )
        return int(found)


@pytest.fixture
async def db(postgresql_url: str) -> AsyncIterator[Stores]:
    stores = await open_filled_stores(postgresql_url)
    yield stores
    await stores.database.close()


@pytest.fixture
def connections(postgresql_url: str, postgres_server: PostgresServer) -> Connections:
    return Connections(postgresql_url, postgres_server)


def count(conn: ReadConnection) -> int:
    found = conn.row(COUNT, {})
    assert found is not None
    return int(found[0])


async def test_the_database_s_short_reads_are_its_own(db: Stores) -> None:
    assert isinstance(db.database.reads, PostgresReads)


async def test_pages_are_those_the_engine_reads(db: Stores, connections: Connections) -> None:
    node = db.nodes["blog"]
    through_engine = ItemStore(db.engine, EngineReads(db.engine, short_autocommit=True))
    runner = PostgresReads(db.engine, connections.connect)
    own = ItemStore(db.engine, runner)
    try:
        for request in REQUESTS:
            assert await own.get_items(node, **request) == await through_engine.get_items(
                node, **request
            ), request
        with pytest.raises(RowNotFound):
            await own.get_items(node, after="unknown", max_items=3)
        item = await own.get_item(node, "i005")
        assert item is not None and item.parsed == {"n": 5} and item.parsed_json == '{"n":5}'
        assert await own.count_items(node) == ITEMS
        # The short ones ran on the runner's connection: the test can tell.
        assert connections.opened == 1
    finally:
        await runner.close()


async def test_many_reads_at_once_share_a_few_connections_and_none_of_the_engine_s(
    db: Stores, connections: Connections
) -> None:
    taken = 0

    def checkout(*_args: Any) -> None:
        nonlocal taken
        taken += 1

    runner = PostgresReads(db.engine, connections.connect, connections=3)
    store = ItemStore(db.engine, runner)
    node = db.nodes["blog"]
    event.listen(db.engine.sync_engine, "checkout", checkout)
    try:
        pages = await asyncio.gather(
            *(store.get_items(node, max_items=10, after=f"i{n:03d}") for n in range(64))
        )
        assert [p.items[0].item_id for p in pages] == [f"i{n + 1:03d}" for n in range(64)]
        assert connections.opened == 3
        assert await connections.on_server() == 3
        assert taken == 0
        # A whole node is a long read: through the engine's pool.
        assert len((await store.get_items(node)).items) == ITEMS
        assert taken == 1
    finally:
        event.remove(db.engine.sync_engine, "checkout", checkout)
        await runner.close()
    assert await connections.on_server() == 0


async def test_a_read_whose_connection_fails_is_read_through_the_engine(
    db: Stores, connections: Connections
) -> None:
    runner = PostgresReads(db.engine, connections.connect, connections=2)
    try:
        connections.refuse = True
        assert await runner.run(count, short=True) == ITEMS
        connections.refuse = False
        assert await runner.run(count, short=True) == ITEMS
        assert connections.opened == 1
        # The server ends the runner's session: the read that meets it is run again,
        # whether the connection already knows it is closed, has read part of the
        # server's farewell, or none of it (rounds, since which it meets is timing).
        for round_ in range(1, 6):
            ended = await asyncio.to_thread(
                connections.server.psql,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                f" WHERE application_name = '{connections.name}'",
            )
            assert ended == "1"
            assert await runner.run(count, short=True) == ITEMS
            # The next read has a new connection at the latest.
            assert await runner.run(count, short=True) == ITEMS
            assert connections.opened == 1 + round_
    finally:
        await runner.close()


async def test_a_statement_the_server_refuses_fails_as_through_the_engine(
    db: Stores, connections: Connections
) -> None:
    """The caller sees SQLAlchemy's error, as every other read's; the connection, which
    did nothing wrong, serves the next read."""
    divided = select(literal(1) / bindparam("zero", type_=Integer()))

    def dividing(conn: ReadConnection) -> Any:
        return conn.row(divided, {"zero": 0})

    runner = PostgresReads(db.engine, connections.connect, connections=1)
    try:
        with pytest.raises(DBAPIError, match="division by zero"):
            await runner.run(dividing, short=True)
        assert await runner.run(count, short=True) == ITEMS
        assert connections.opened == 1
    finally:
        await runner.close()


async def test_a_cancelled_caller_leaves_its_connection_fit_for_the_next_read(
    db: Stores, connections: Connections
) -> None:
    # Set from the read's greenlet, on the event loop's thread.
    started = asyncio.Event()
    slow = select(func.pg_sleep(SLEEP_S), func.count()).select_from(COUNT.subquery())

    def sleeping(conn: ReadConnection) -> int:
        started.set()
        found = conn.row(slow, {})
        assert found is not None
        return int(found[1])

    runner = PostgresReads(db.engine, connections.connect, connections=1)
    try:
        call = asyncio.create_task(runner.run(sleeping, short=True))
        await asyncio.wait_for(started.wait(), 30)
        began = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The read finished before the caller saw its cancellation: the server slept
        # its 0.3 s, which began after ``started`` (cut off, the statement would have
        # been cancelled at once)...
        assert time.monotonic() - began >= SLEEP_S - 0.01
        # ...and its connection is back and serves the next read.
        assert await runner.run(count, short=True) == ITEMS
        assert connections.opened == 1
        assert await connections.on_server() == 1
    finally:
        await runner.close()


async def test_closing_waits_for_reads_under_way_and_leaves_nothing_open(
    db: Stores, connections: Connections
) -> None:
    runner = PostgresReads(db.engine, connections.connect, connections=4)
    await asyncio.gather(*(runner.run(count, short=True) for _ in range(8)))
    assert await connections.on_server() == 4
    under_way = asyncio.create_task(runner.run(count, short=True))
    await asyncio.sleep(0)
    await runner.close()
    assert await under_way == ITEMS
    assert await connections.on_server() == 0
    with pytest.raises(RuntimeError, match="closed"):
        await runner.run(count, short=True)
