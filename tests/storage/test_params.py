"""ParamStore on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from roost.storage import Database, RowNotFound


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    await database.profiles.create_profile("p", "p@example.org", "x", {})
    await database.profiles.create_profile("q", "q@example.org", "x", {})
    yield database
    await database.close()


async def test_unset_param_is_none(db: Database) -> None:
    assert await db.params.get_param("p", "general", "theme") is None
    assert await db.params.get_param(None, "general", "theme") is None


async def test_set_then_replace(db: Database) -> None:
    await db.params.set_param("p", "general", "theme", "dark")
    await db.params.set_param("p", "general", "theme", "light")
    assert await db.params.get_param("p", "general", "theme") == "light"
    assert await db.params.list_params("p", "general") == {"theme": "light"}


async def test_scopes_are_separate(db: Database) -> None:
    await db.params.set_param(None, "general", "theme", "global")
    await db.params.set_param("p", "general", "theme", "of p")
    await db.params.set_param(None, "general", "theme", "global again")
    assert await db.params.get_param(None, "general", "theme") == "global again"
    assert await db.params.get_param("p", "general", "theme") == "of p"
    assert await db.params.get_param("q", "general", "theme") is None
    async with db.engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT count(*) FROM params")).scalar()
    assert rows == 2  # replaced in place, never duplicated


async def test_list_is_per_category(db: Database) -> None:
    await db.params.set_param("p", "a", "x", "1")
    await db.params.set_param("p", "a", "y", "2")
    await db.params.set_param("p", "b", "x", "3")
    await db.params.set_param(None, "a", "z", "4")
    assert await db.params.list_params("p", "a") == {"x": "1", "y": "2"}
    assert await db.params.list_params("p", "b") == {"x": "3"}
    assert await db.params.list_params(None, "a") == {"z": "4"}
    assert await db.params.list_params("q", "a") == {}


async def test_unknown_profile_is_refused(db: Database) -> None:
    with pytest.raises(RowNotFound, match="nobody"):
        await db.params.get_param("nobody", "a", "x")
    with pytest.raises(RowNotFound):
        await db.params.set_param("nobody", "a", "x", "1")
    with pytest.raises(RowNotFound):
        await db.params.list_params("nobody", "a")


async def test_claim_sets_an_unset_or_empty_param_and_keeps_a_set_one(db: Database) -> None:
    assert await db.params.claim_param(None, "@roost", "pick", "first") == "first"
    assert await db.params.claim_param(None, "@roost", "pick", "second") == "first"
    await db.params.set_param(None, "@roost", "pick", "")
    assert await db.params.claim_param(None, "@roost", "pick", "third") == "third"
    assert await db.params.get_param(None, "@roost", "pick") == "third"


async def test_racing_claims_agree_on_one_value(database_url: str) -> None:
    # One Database each: separate connection pools, as separate daemons would have.
    databases = [await Database.open(database_url) for _ in range(6)]
    try:
        claims = await asyncio.gather(
            *(
                db.params.claim_param(None, "@roost", "pick", f"v{n}")
                for n, db in enumerate(databases)
            )
        )
        stored = await databases[0].params.get_param(None, "@roost", "pick")
        assert stored in {f"v{n}" for n in range(6)}
        assert claims == [stored] * 6
        # Racing creations of a param all succeed too, one value staying.
        await asyncio.gather(
            *(db.params.set_param(None, "general", "x", f"v{n}") for n, db in enumerate(databases))
        )
        assert await databases[0].params.get_param(None, "general", "x") in {
            f"v{n}" for n in range(6)
        }
    finally:
        for db in databases:
            await db.close()
