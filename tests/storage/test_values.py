"""ValueStore on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.storage import Database, RowNotFound, TypedValue


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    await database.profiles.create_profile("p", "p@example.org", "x", {})
    yield database
    await database.close()


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("s", "text é ✓"),
        ("t", 2**64 - 1),
        ("x", 2**70),
        ("d", 1e300),
        ("i", -7),
        ("d", 0.25),
        ("b", True),
        ("as", ["a", "b"]),
        ("a{sv}", {"k": [1, {"n": None}]}),
        ("mystery", None),
    ],
)
async def test_values_round_trip_with_their_type(db: Database, value_type: str, value: Any) -> None:
    await db.values.set_value("p", "ns", "key", value_type, value)
    got = await db.values.get_values("p", "ns", ["key"])
    assert got == {"key": TypedValue(value_type, value)}
    assert type(got["key"].value) is type(value)


async def test_get_values_with_and_without_keys(db: Database) -> None:
    for key in ("a", "b", "c"):
        await db.values.set_value("p", "ns", key, "s", key.upper())
    await db.values.set_value("p", "other", "a", "s", "elsewhere")
    assert await db.values.get_values("p", "ns", ["a", "c", "missing"]) == {
        "a": TypedValue("s", "A"),
        "c": TypedValue("s", "C"),
    }
    assert set(await db.values.get_values("p", "ns", [])) == {"a", "b", "c"}
    assert await db.values.get_values("p", "empty", []) == {}


async def test_set_replaces_value_and_type(db: Database) -> None:
    await db.values.set_value(None, "ns", "k", "s", "text")
    await db.values.set_value(None, "ns", "k", "u", 3)
    assert await db.values.get_values(None, "ns", ["k"]) == {"k": TypedValue("u", 3)}


async def test_global_and_profile_scopes_are_separate(db: Database) -> None:
    await db.values.set_value(None, "ns", "k", "s", "global")
    await db.values.set_value("p", "ns", "k", "s", "mine")
    assert (await db.values.get_values(None, "ns", []))["k"].value == "global"
    assert (await db.values.get_values("p", "ns", []))["k"].value == "mine"


async def test_delete_says_whether_it_existed(db: Database) -> None:
    await db.values.set_value("p", "ns", "k", "s", "v")
    await db.values.set_value(None, "ns", "k", "s", "v")
    assert await db.values.delete_value("p", "ns", "k") is True
    assert await db.values.delete_value("p", "ns", "k") is False
    assert await db.values.get_values("p", "ns", []) == {}
    assert (await db.values.get_values(None, "ns", [])).keys() == {"k"}


async def test_unknown_profile_is_refused(db: Database) -> None:
    with pytest.raises(RowNotFound):
        await db.values.get_values("nobody", "ns", [])
    with pytest.raises(RowNotFound):
        await db.values.set_value("nobody", "ns", "k", "s", "v")
    with pytest.raises(RowNotFound):
        await db.values.delete_value("nobody", "ns", "k")


async def test_values_json_cannot_hold_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="JSON"):
        await db.values.set_value("p", "ns", "k", "x", object())
    with pytest.raises(ValueError):
        await db.values.set_value("p", "ns", "k", "d", float("nan"))
    assert await db.values.get_values("p", "ns", []) == {}
