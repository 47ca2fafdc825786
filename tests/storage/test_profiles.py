"""ProfileStore on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roost.storage import AlreadyExists, Database, RowNotFound
from roost.storage.engines import engine_for
from roost.storage.models import PubsubItem


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


async def test_create_then_get_returns_what_was_stored(db: Database) -> None:
    created = await db.profiles.create_profile(
        "work", "me@example.org", "s3cret", {"host": "127.0.0.1", "port": 5222}
    )
    fetched = await db.profiles.get_profile("work")
    assert fetched == created
    assert (fetched.name, fetched.jid, fetched.password) == ("work", "me@example.org", "s3cret")
    assert fetched.options == {"host": "127.0.0.1", "port": 5222}
    assert fetched.created > 0


async def test_repr_never_shows_the_password(db: Database) -> None:
    profile = await db.profiles.create_profile("p", "p@example.org", "hunter2-secret", {})
    assert "hunter2-secret" not in repr(profile)
    assert "hunter2-secret" not in str(profile)
    assert "p@example.org" in repr(profile)


async def test_duplicate_name_is_refused(db: Database) -> None:
    await db.profiles.create_profile("p", "a@example.org", "x", {})
    with pytest.raises(AlreadyExists, match="'p'"):
        await db.profiles.create_profile("p", "b@example.org", "y", {})
    assert (await db.profiles.get_profile("p")).jid == "a@example.org"


async def test_list_is_ordered_by_name(db: Database) -> None:
    for name in ("zed", "alpha", "mid"):
        await db.profiles.create_profile(name, f"{name}@example.org", "x", {})
    assert [p.name for p in await db.profiles.list_profiles()] == ["alpha", "mid", "zed"]


async def test_unknown_profile_is_row_not_found(db: Database) -> None:
    with pytest.raises(RowNotFound):
        await db.profiles.get_profile("nobody")
    with pytest.raises(RowNotFound):
        await db.profiles.delete_profile("nobody")
    with pytest.raises(RowNotFound):
        await db.profiles.update_profile_options("nobody", {})


async def test_update_options_replaces_them(db: Database) -> None:
    await db.profiles.create_profile("p", "p@example.org", "x", {"host": "h", "port": 1})
    updated = await db.profiles.update_profile_options("p", {"autoconnect": True})
    assert updated.options == {"autoconnect": True}
    assert (await db.profiles.get_profile("p")).options == {"autoconnect": True}


async def test_delete_cascades_to_everything_of_the_profile(db: Database) -> None:
    await db.profiles.create_profile("gone", "g@example.org", "x", {})
    await db.profiles.create_profile("kept", "k@example.org", "x", {})
    for profile in ("gone", "kept"):
        await db.params.set_param(profile, "c", "n", profile)
        await db.values.set_value(profile, "ns", "k", "s", profile)
        node = await db.nodes.get_or_create_node(profile, "pubsub.example.org", "blog")
        async with db.engine.begin() as conn:
            await conn.execute(
                PubsubItem.__table__.insert(),
                [
                    {
                        "node_id": node.id,
                        "item_id": f"{profile}-{i}",
                        "publisher": "",
                        "position": i,
                        "data": "<item/>",
                        "search_text": f"text of {profile}",
                        "created": 1.0,
                        "updated": 1.0,
                    }
                    for i in range(3)
                ],
            )
    await db.params.set_param(None, "c", "n", "global")

    await db.profiles.delete_profile("gone")

    assert [p.name for p in await db.profiles.list_profiles()] == ["kept"]
    assert [n.profile for n in await db.nodes.list_nodes()] == ["kept"]
    assert await db.params.get_param("kept", "c", "n") == "kept"
    assert await db.params.get_param(None, "c", "n") == "global"
    assert (await db.values.get_values("kept", "ns", [])).keys() == {"k"}
    async with db.engine.connect() as conn:
        items = (await conn.exec_driver_sql("SELECT item_id FROM pubsub_items")).scalars()
        assert sorted(items) == ["kept-0", "kept-1", "kept-2"]
        params = (await conn.exec_driver_sql("SELECT value FROM params")).scalars()
        assert sorted(params) == ["global", "kept"]
        values = (await conn.exec_driver_sql("SELECT count(*) FROM kv_store")).scalar()
        assert values == 1
        # The full-text index followed the cascade (on SQLite, its delete trigger fired
        # for each item).
        assert await engine_for(conn).fulltext_is_consistent(conn)
    assert await db.search.search({"fts": "gone"}) == []
