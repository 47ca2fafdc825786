"""A server that misbehaves: duplicate item ids in one answer, items with no id, huge
items, and a server that never answers.

The service is the hostile XEP-0114 component of the test Prosody
(``tests/fixtures/hostile.py``). Roost must stay up, say what happened, store nothing
wrong (an item with no id not stored, a duplicate stored once, an item past the size
limit kept only raw) and never serve a node as complete when its content could not be
read whole.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.cache.stored_form import MAX_STORED_ITEM_BYTES
from roost.service.config import Config
from roost.service.errors import XmppError
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.hostile import HostileService
from tests.fixtures.xmpp import XmppServer
from tests.reliability.test_server_faults import (
    CALL_BOUND,
    REQUEST_TIMEOUT,
    RULES,
    payload,
    wait_node_state,
)

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]


@asynccontextmanager
async def hostile_world(
    tmp_path: Path, server: XmppServer
) -> AsyncIterator[tuple[Backend, EventLog, HostileService]]:
    """bob's backend, connected, and the hostile service."""
    config = Config(cache_rules=RULES, request_timeout=REQUEST_TIMEOUT, prefetch=False)
    async with (
        HostileService(server) as evil,  # type: ignore[arg-type]
        running_backend(tmp_path / "hostile.db", server, ["bob"], config) as (backend, log),
    ):
        await backend.connect("bob")
        yield backend, log, evil


def new_node() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


async def stored_ids(backend: Backend, service: str, node: str) -> list[str]:
    record = await backend.db.nodes.get_node("bob", service, node)
    assert record is not None
    return [item_id for item_id, _updated in await backend.db.items.list_item_ids(record.id)]


async def test_duplicates_and_items_without_an_id_are_not_stored_twice_or_at_all(
    tmp_path: Path, prosody_server: XmppServer
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        ids = [f"h{n}" for n in range(20)]
        evil.put_items(node, [(i, payload(n)) for n, i in enumerate(ids)])
        evil.put_items(node, [("", payload(99))])
        evil.node(node).doubled = {"h3", "h7", ""}
        mark = len(log.events)
        await backend.pubsub.sync("bob", evil.jid, node)
        await wait_node_state(log, node, "completed", mark)
        # Each id once, none empty; the item with no id is not stored.
        stored = await stored_ids(backend, evil.jid, node)
        assert sorted(stored) == sorted(ids)
        state = await backend.pubsub.get_node_state("bob", evil.jid, node)
        assert state["item_count"] == len(ids)
        # The answer held items the copy cannot hold (twice, or without an id): the copy
        # is not taken for the whole node, and a whole read goes to the server.
        record = await backend.db.nodes.get_node("bob", evil.jid, node)
        assert record is not None and record.extra["truncated"] is True
        whole = await backend.pubsub.get_items("bob", evil.jid, node, {})
        assert not whole.from_cache
        # Whatever the cache does answer never holds an item twice or one without an id.
        newest = await backend.pubsub.get_items("bob", evil.jid, node, {"max_items": 5})
        answered = [i.id for i in newest.items]
        if newest.from_cache:
            assert len(set(answered)) == len(answered) and "" not in answered


async def test_a_huge_item_is_kept_raw_only_and_the_node_stays_whole(
    tmp_path: Path, prosody_server: XmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        huge = f"<entry xmlns='urn:example:faults'><pad>{'y' * MAX_STORED_ITEM_BYTES}</pad></entry>"
        evil.put_items(node, [("small", payload(1)), ("huge", huge), ("after", payload(2))])
        mark = len(log.events)
        with caplog.at_level(logging.WARNING, logger="roost.service.cache.stored_form"):
            await backend.pubsub.sync("bob", evil.jid, node)
            await wait_node_state(log, node, "completed", mark)
        # Logged, by id and size, and the sync went on past it.
        assert any(
            "'huge'" in r.getMessage() and "stored raw" in r.getMessage() for r in caplog.records
        )
        assert sorted(await stored_ids(backend, evil.jid, node)) == ["after", "huge", "small"]
        # Kept raw: as the server sent it, but neither parsed nor indexed for search.
        hits = await backend.pubsub.search({"fts": "y" * 20, "nodes": [node]})
        assert hits == []
        # Still up.
        assert await backend.profiles.list() == ["bob"]


async def test_a_server_that_never_answers_gives_a_named_error_and_no_node(
    tmp_path: Path, prosody_server: XmppServer
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [(f"s{n}", payload(n)) for n in range(5)])
        evil.node(node).silent = True
        started = time.monotonic()
        with pytest.raises(XmppError) as caught:
            await backend.pubsub.get_items("bob", evil.jid, node, {"use_cache": False})
        assert caught.value.name == "Xmpp.RemoteServerTimeout"
        assert time.monotonic() - started < CALL_BOUND
        mark = len(log.events)
        await backend.pubsub.sync("bob", evil.jid, node)
        await wait_node_state(log, node, "error", mark)
        state = await backend.pubsub.get_node_state("bob", evil.jid, node)
        assert state["state"] == "error" and "did not answer" in state["reason"]
        assert not state["current"] and state["item_count"] == 0
        # Still up; and never served from the cache.
        assert await backend.profiles.list() == ["bob"]
        with pytest.raises(XmppError):
            await backend.pubsub.get_items("bob", evil.jid, node, {})
        # The server mends its ways: the retry completes it.
        evil.node(node).silent = False
        mark = len(log.events)
        await backend.pubsub.sync("bob", evil.jid, node)
        await wait_node_state(log, node, "completed", mark)
        assert sorted(await stored_ids(backend, evil.jid, node)) == [f"s{n}" for n in range(5)]
