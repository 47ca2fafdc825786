"""NodeStore on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from roost.storage import NODE_STATES, Database, RowNotFound
from roost.storage.models import PubsubItem

SERVICE = "pubsub.example.org"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    await database.profiles.create_profile("p", "p@example.org", "x", {})
    await database.profiles.create_profile("q", "q@example.org", "x", {})
    yield database
    await database.close()


async def _add_items(db: Database, node_id: int, count: int) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            PubsubItem.__table__.insert(),
            [
                {
                    "node_id": node_id,
                    "item_id": f"{node_id}-{i}",
                    "publisher": "",
                    "position": i,
                    "data": "<item/>",
                    "search_text": "words",
                    "created": 1.0,
                    "updated": 1.0,
                }
                for i in range(count)
            ],
        )


async def _item_count(db: Database) -> int:
    async with db.engine.connect() as conn:
        count = (await conn.exec_driver_sql("SELECT count(*) FROM pubsub_items")).scalar()
    return int(count or 0)


async def test_get_or_create_creates_once(db: Database) -> None:
    before = time.time()
    created = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    again = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    assert again == created
    assert created.profile == "p"
    assert (created.service, created.name) == (SERVICE, "blog")
    assert created.sync_state == "none"
    assert created.sync_state_updated >= before
    assert (created.analyser, created.type, created.subtype) == (None, None, None)
    assert created.subscribed is False
    assert created.extra == {}


async def test_same_node_name_is_distinct_per_profile_and_service(db: Database) -> None:
    a = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    b = await db.nodes.get_or_create_node("q", SERVICE, "blog")
    c = await db.nodes.get_or_create_node("p", "other.example.org", "blog")
    assert len({a.id, b.id, c.id}) == 3
    assert b.profile == "q"
    assert b.profile_id != a.profile_id


async def test_concurrent_get_or_create_yield_one_node(db: Database) -> None:
    nodes = await asyncio.gather(
        *(db.nodes.get_or_create_node("p", SERVICE, "race") for _ in range(8))
    )
    assert len({node.id for node in nodes}) == 1
    assert len(await db.nodes.list_nodes("p")) == 1


async def test_get_node_and_by_id(db: Database) -> None:
    assert await db.nodes.get_node("p", SERVICE, "blog") is None
    node = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    assert await db.nodes.get_node("p", SERVICE, "blog") == node
    assert await db.nodes.get_node("q", SERVICE, "blog") is None
    assert await db.nodes.get_node_by_id(node.id) == node
    with pytest.raises(RowNotFound):
        await db.nodes.get_node_by_id(node.id + 100)
    with pytest.raises(RowNotFound):
        await db.nodes.get_node("nobody", SERVICE, "blog")
    with pytest.raises(RowNotFound):
        await db.nodes.get_or_create_node("nobody", SERVICE, "blog")


async def test_set_analysis(db: Database) -> None:
    node = await db.nodes.get_or_create_node("p", SERVICE, "urn:xmpp:microblog:0")
    changed = await db.nodes.set_analysis(node.id, "microblog", "blog", "xep-0277")
    assert (changed.analyser, changed.type, changed.subtype) == ("microblog", "blog", "xep-0277")
    assert await db.nodes.get_node_by_id(node.id) == changed
    cleared = await db.nodes.set_analysis(node.id, None, None, None)
    assert (cleared.analyser, cleared.type, cleared.subtype) == (None, None, None)


async def test_set_sync_state_stamps_and_merges_extra(db: Database) -> None:
    node = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    await db.nodes.update_extra(node.id, {"kept": 1, "reason": "old"})
    before = time.time()
    changed = await db.nodes.set_sync_state(node.id, "error", extra={"reason": "timeout"})
    assert changed.sync_state == "error"
    assert changed.sync_state_updated >= before
    assert changed.extra == {"kept": 1, "reason": "timeout"}
    plain = await db.nodes.set_sync_state(node.id, "completed")
    assert plain.extra == {"kept": 1, "reason": "timeout"}
    assert (await db.nodes.get_node_by_id(node.id)).sync_state == "completed"


async def test_invalid_state_is_refused(db: Database) -> None:
    node = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    with pytest.raises(ValueError, match="synced"):
        await db.nodes.set_sync_state(node.id, "synced")
    with pytest.raises(ValueError):
        await db.nodes.list_nodes(states=["synced"])
    assert (await db.nodes.get_node_by_id(node.id)).sync_state == "none"
    with pytest.raises(RowNotFound):
        await db.nodes.set_sync_state(node.id + 100, "completed")


async def test_set_subscribed_and_update_extra(db: Database) -> None:
    node = await db.nodes.get_or_create_node("p", SERVICE, "blog")
    assert (await db.nodes.set_subscribed(node.id, True)).subscribed is True
    assert (await db.nodes.get_node_by_id(node.id)).subscribed is True
    assert (await db.nodes.set_subscribed(node.id, False)).subscribed is False
    await db.nodes.update_extra(node.id, {"a": 1, "b": [1, 2]})
    merged = await db.nodes.update_extra(node.id, {"b": None, "c": "x"})
    assert merged.extra == {"a": 1, "b": None, "c": "x"}
    assert (await db.nodes.get_node_by_id(node.id)).extra == merged.extra
    with pytest.raises(RowNotFound):
        await db.nodes.update_extra(node.id + 100, {})
    with pytest.raises(RowNotFound):
        await db.nodes.set_subscribed(node.id + 100, True)


async def test_extra_merges_from_two_writers_never_lose_each_other(
    db: Database, database_url: str
) -> None:
    # Two engines on one database, as two daemons (or two tasks) would be: each merges
    # keys of its own into the same node, interleaved. A read-modify-write in Python
    # would lose some of the other's keys; the merge is one UPDATE.
    node = await db.nodes.get_or_create_node("p", SERVICE, "shared")
    other = await Database.open(database_url)
    try:

        async def merge(store: Database, prefix: str) -> None:
            for n in range(25):
                await store.nodes.update_extra(node.id, {f"{prefix}{n}": n})
                await store.nodes.set_sync_state(node.id, "in_progress", extra={f"{prefix}s": n})

        await asyncio.gather(merge(db, "a"), merge(other, "b"))
    finally:
        await other.close()
    extra = (await db.nodes.get_node_by_id(node.id)).extra
    assert {k: v for k, v in extra.items() if not k.endswith("s")} == {
        **{f"a{n}": n for n in range(25)},
        **{f"b{n}": n for n in range(25)},
    }
    assert (extra["as"], extra["bs"]) == (24, 24)


async def test_list_nodes_filters(db: Database) -> None:
    a = await db.nodes.get_or_create_node("p", SERVICE, "a")
    b = await db.nodes.get_or_create_node("p", SERVICE, "b")
    c = await db.nodes.get_or_create_node("q", SERVICE, "c")
    await db.nodes.set_sync_state(a.id, "completed")
    await db.nodes.set_sync_state(c.id, "in_progress")
    assert [n.id for n in await db.nodes.list_nodes()] == [a.id, b.id, c.id]
    assert [n.id for n in await db.nodes.list_nodes("p")] == [a.id, b.id]
    assert [n.id for n in await db.nodes.list_nodes(states=["in_progress", "completed"])] == [
        a.id,
        c.id,
    ]
    assert [n.id for n in await db.nodes.list_nodes("q", states=["completed"])] == []
    assert await db.nodes.list_nodes(states=[]) == []
    with pytest.raises(RowNotFound):
        await db.nodes.list_nodes("nobody")


async def test_delete_node_takes_its_items(db: Database) -> None:
    gone = await db.nodes.get_or_create_node("p", SERVICE, "gone")
    kept = await db.nodes.get_or_create_node("p", SERVICE, "kept")
    await _add_items(db, gone.id, 5)
    await _add_items(db, kept.id, 2)
    assert await db.nodes.delete_node(gone.id) is True
    assert await db.nodes.delete_node(gone.id) is False
    assert await db.nodes.get_node("p", SERVICE, "gone") is None
    assert await _item_count(db) == 2


async def test_reset_all_nodes_empties_the_cache(db: Database) -> None:
    for profile, name in (("p", "a"), ("p", "b"), ("q", "c")):
        node = await db.nodes.get_or_create_node(profile, SERVICE, name)
        await _add_items(db, node.id, 3)
    assert await db.nodes.reset_all_nodes() == 3
    assert await db.nodes.list_nodes() == []
    assert await _item_count(db) == 0
    assert await db.nodes.reset_all_nodes() == 0
    assert [p.name for p in await db.profiles.list_profiles()] == ["p", "q"]


def test_every_documented_state_is_accepted() -> None:
    assert {"none", "no_sync", "in_progress", "completed", "error"} == NODE_STATES
