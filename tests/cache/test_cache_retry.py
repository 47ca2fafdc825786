"""A failed sync is retried with backoff, not abandoned.

A server that fails on demand cannot be had from Prosody or ejabberd, so the sync
source here is a stand-in; the database is a real SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.cache import scheduler as scheduler_module
from roost.service.cache.cache import PubsubCache
from roost.service.cache.source import Currency
from roost.service.events import Event, EventHub, ProfileConnected, SyncStateChanged
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.storage import Database


class FlakySource:
    """A node of three items whose first ``failures`` fetches fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.fetches = 0

    async def _pages(self) -> AsyncIterator[list[PubsubItem]]:
        self.fetches += 1
        if self.fetches <= self.failures:
            raise ConnectionResetError("the stream broke")
        yield [
            PubsubItem(
                f"i{n}",
                "",
                f'<item xmlns="http://jabber.org/protocol/pubsub" '
                f'id="i{n}"><p xmlns="urn:x">{n}</p></item>',
            )
            for n in range(3)
        ]

    def fetch_all_items(self, *_args: Any, **_kwargs: Any) -> AsyncIterator[list[PubsubItem]]:
        return self._pages()

    async def list_item_ids(self, *_args: Any) -> list[str] | None:
        return None

    def walked_total(self, *_args: Any) -> int | None:
        return None

    async def fetch_items_by_id(self, *_args: Any) -> list[PubsubItem]:
        return []

    async def keep_current(self, *_args: Any) -> Currency:
        return Currency(current=True, subscribed=True)

    async def newest_item_id(self, *_args: Any) -> str | None:
        return "i2"

    async def node_max_items(self, *_args: Any) -> int | None:
        return None

    def is_connected(self, _profile: str) -> bool:
        return True

    def follows(self, *_args: Any) -> bool:
        return False

    def followed_contacts(self, _profile: str) -> list[str]:
        return []

    async def peek_items(self, *_args: Any) -> list[PubsubItem] | None:
        return None

    async def release_subscription(self, *_args: Any) -> None:
        return None


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    await database.profiles.create_profile("me", "me@example.org", "pw", {})
    yield database
    await database.close()


async def test_a_failed_sync_is_retried_until_it_completes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "RETRY_DELAYS", (0.05, 0.1))
    hub = EventHub()
    states: list[str] = []
    hub.subscribe(lambda e: states.append(e.state) if isinstance(e, SyncStateChanged) else None)
    source = FlakySource(failures=2)
    cache = PubsubCache(db, source, hub)
    try:
        await cache.sync("me", "pubsub.example.org", "n")
        for _ in range(100):
            if "completed" in states:
                break
            await asyncio.sleep(0.05)
        assert states == [
            "in_progress",
            "error",
            "in_progress",
            "error",
            "in_progress",
            "completed",
        ]
        assert source.fetches == 3
        state = await cache.get_node_state("me", "pubsub.example.org", "n")
        assert state["item_count"] == 3 and state["current"]
        reply = await cache.answer("me", "pubsub.example.org", "n", ItemsRequest())
        assert reply is not None and [i.id for i in reply.items] == ["i0", "i1", "i2"]
    finally:
        await cache.close()


async def test_connection_resyncs_nodes_that_were_synced(db: Database) -> None:
    hub = EventHub()
    seen: list[Event] = []
    hub.subscribe(seen.append)
    source = FlakySource(failures=0)
    cache = PubsubCache(db, source, hub)
    try:
        await cache.sync("me", "pubsub.example.org", "n")
        for _ in range(100):
            if any(isinstance(e, SyncStateChanged) and e.state == "completed" for e in seen):
                break
            await asyncio.sleep(0.05)
        seen.clear()
        hub.publish(ProfileConnected("me", "me@example.org/r"))
        for _ in range(100):
            if any(isinstance(e, SyncStateChanged) and e.state == "completed" for e in seen):
                break
            await asyncio.sleep(0.05)
        assert source.fetches == 2
    finally:
        await cache.close()
