"""Deletes on SQLite run on connections that have not seen the schema's last change.

An index created at run time (``ItemStore.ensure_parsed_key_index``, when an analyser
with indexed keys first meets a node) changes the schema under every other open
connection. SQLite 3.40 failed the first DELETE reaching the items on such a connection
with "no such table" when the full-text table had not been opened on it since: a sync's
clean-up, a retraction or a purge failed once, and a retraction event was lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from roost.storage.engine import create_engine
from roost.storage.engines import SqliteEngine, engine_for
from roost.storage.models import PubsubItem
from roost.storage.writes import SqliteFileWrites
from tests.storage.test_items import Stores, item, open_stores


@pytest.fixture
async def stores(sqlite_url: str) -> AsyncIterator[Stores]:
    """The stores on an SQLite file, with three items in each node."""
    stores = await open_stores(sqlite_url)
    for node_id in stores.nodes.values():
        await stores.items.upsert_items(node_id, [item(f"i{n}") for n in range(3)])
    yield stores
    await stores.database.close()


async def create_index(conn: AsyncConnection, name: str) -> None:
    """Change the schema from ``conn``, as a run-time expression index does."""
    await conn.exec_driver_sql(
        f"CREATE INDEX {name} ON pubsub_items (json_extract(parsed, '$.{name}'))"
    )
    await conn.commit()


async def item_count(stores: Stores) -> int:
    async with stores.engine.connect() as conn:
        return int((await conn.scalar(select(func.count()).select_from(PubsubItem))) or 0)


async def fulltext_in_step(stores: Stores) -> bool:
    engine = engine_for(stores.engine)
    assert isinstance(engine, SqliteEngine)
    async with stores.engine.connect() as conn:
        return await engine.fulltext_is_consistent(conn)


async def test_a_pooled_connection_deletes_after_another_changed_the_schema(
    stores: Stores, sqlite_url: str
) -> None:
    blog, news = stores.nodes["blog"], stores.nodes["news"]
    # An engine of its own: connections that have not opened the full-text table yet.
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as stale, engine.connect() as other:
            assert await stale.scalar(text("SELECT count(*) FROM pubsub_nodes")) == 3
            await stale.commit()
            await create_index(other, "first")
            deleted = await stale.execute(delete(PubsubItem).where(PubsubItem.node_id == blog))
            await stale.commit()
            assert deleted.rowcount == 3
            # Again once the connection has reloaded its schema for a read (which closes
            # the full-text table on it), through a node's delete that cascades.
            await create_index(other, "second")
            assert await stale.scalar(text("SELECT count(*) FROM pubsub_nodes")) == 3
            await stale.commit()
            await create_index(other, "third")
            await stale.exec_driver_sql(f"DELETE FROM pubsub_nodes WHERE id = {news}")
            await stale.commit()
    finally:
        await engine.dispose()
    assert await item_count(stores) == 3  # bob's blog's
    assert await fulltext_in_step(stores)


async def test_the_loop_s_write_connection_deletes_after_another_changed_the_schema(
    stores: Stores,
) -> None:
    writes = stores.database.writes
    assert isinstance(writes, SqliteFileWrites)
    blog = stores.nodes["blog"]

    def count(session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(PubsubItem)) or 0)

    def delete_blog(session: Session) -> int:
        return int(session.execute(delete(PubsubItem).where(PubsubItem.node_id == blog)).rowcount)

    assert await writes.run("count", count) == 9  # the connection knows the schema
    async with stores.engine.connect() as other:
        await create_index(other, "first")
    assert await writes.run("delete", delete_blog) == 3
    assert await item_count(stores) == 6
    assert await fulltext_in_step(stores)


async def test_a_table_really_missing_still_fails(stores: Stores) -> None:
    async with stores.engine.connect() as conn:
        with pytest.raises(Exception, match="no such table: nowhere"):
            await conn.exec_driver_sql("DELETE FROM nowhere")
