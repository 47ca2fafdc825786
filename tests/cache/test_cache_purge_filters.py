"""Purge filters are checked before anything is removed: a wrong type is InvalidArgument."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.cache.cache import PubsubCache
from roost.service.errors import InvalidArgument
from roost.service.events import EventHub
from roost.service.pubsub_stack import build_pubsub_stack
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database


@pytest.fixture
async def cache(database_url: str) -> AsyncIterator[PubsubCache]:
    async def no_profiles(name: str) -> tuple[str, str, dict[str, Any]]:
        raise AssertionError(f"no session is opened here ({name})")

    db = await Database.open(database_url)
    hub = EventHub()
    sessions = SessionManager(no_profiles, hub)
    stack = build_pubsub_stack(db, sessions, hub)
    yield stack.cache
    await stack.close()
    await db.close()


@pytest.mark.parametrize("value", [5, "bob", True, {"bob": 1}, ["bob", 2]])
async def test_a_list_filter_of_another_type_is_invalid(cache: PubsubCache, value: Any) -> None:
    with pytest.raises(InvalidArgument, match="must be a list of strings"):
        await cache.purge({"profiles": value})


async def test_list_filters_of_strings_are_taken(cache: PubsubCache) -> None:
    assert await cache.purge({"profiles": ["nobody"], "nodes": ("n",)}) == 0
