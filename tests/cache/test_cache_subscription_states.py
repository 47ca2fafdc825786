"""Only an active subscription keeps a node current.

A subscription ``pending`` the owner's approval, or ``unconfigured``, brings no
notifications, and neither does one whose state the server leaves out, nor a listed
subscription of another resource or another node. A node kept by one of those is in
``no_sync`` with the reason, and never served from the cache. The service is
``evil.localhost`` (tests/fixtures/hostile.py), which answers as each case asks.

Prosody only: the component lives there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from roost.service.backend import Backend
from roost.service.events import SyncStateChanged
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.hostile import HostileService
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = pytest.mark.xmpp

NODE = "urn:example:approval"
OTHER = "urn:example:other"


async def synced_state(log: EventLog, service: str, node: str, after: int) -> str:
    """The state the node's sync ends in."""
    event = await log.wait_for(
        lambda e: (
            isinstance(e, SyncStateChanged)
            and (e.service, e.node) == (service, node)
            and e.state in ("completed", "error", "no_sync")
        ),
        f"the end of the sync of {service}/{node}",
        after=after,
    )
    assert isinstance(event, SyncStateChanged)
    return event.state


@asynccontextmanager
async def account_beside_hostile_service(
    server: ProsodyServer, database_url: str
) -> AsyncIterator[tuple[str, Backend, EventLog, HostileService]]:
    """A new account with its profile in a backend (not connected yet), and the hostile
    pubsub service beside the server."""
    (me,) = unique_names("approval", 1)
    await server.register_many([me])
    async with (
        running_backend(database_url, server, [me], None) as (backend, log),
        HostileService(server) as evil,
    ):
        yield me, backend, log, evil


# (the state a subscribe is given, what the service lists as the account's
# subscriptions ("{me}" is the account's bare JID), the state the sync ends in, and words
# of the reason)
CASES = {
    "pending": ("pending", None, "no_sync", "is pending, not active"),
    "unconfigured": ("unconfigured", None, "no_sync", "is unconfigured, not active"),
    "no state answered": ("", None, "no_sync", "state the server did not give"),
    "pending, listed": (
        "pending",
        [{"jid": "{me}", "node": NODE, "subscription": "pending", "subid": "s1"}],
        "no_sync",
        "awaits its owner's approval",
    ),
    "listed without a state": (
        "pending",
        [{"jid": "{me}", "node": NODE, "subid": "s1"}],
        "no_sync",
        "is pending, not active",
    ),
    "listed for another resource": (
        "pending",
        [{"jid": "{me}/phone", "node": NODE, "subscription": "subscribed", "subid": "s1"}],
        "no_sync",
        "is pending, not active",
    ),
    "listed for another node": (
        "pending",
        [{"jid": "{me}", "node": OTHER, "subscription": "subscribed", "subid": "s1"}],
        "no_sync",
        "is pending, not active",
    ),
    "one pending, another subid active": (
        "pending",
        [
            {"jid": "{me}", "node": NODE, "subscription": "pending", "subid": "s1"},
            {"jid": "{me}", "node": NODE, "subscription": "subscribed", "subid": "s2"},
        ],
        "completed",
        "",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_only_an_active_subscription_keeps_a_node_current(
    prosody_server: ProsodyServer, database_url: str, case: str
) -> None:
    granted, listed, outcome, reason = CASES[case]
    server = prosody_server
    async with account_beside_hostile_service(server, database_url) as (me, backend, log, evil):
        await backend.connect(me)
        jid = server.jid(me)
        node = evil.node(NODE)
        node.subscribe_state = granted
        if listed is not None:
            node.listed = [{k: v.format(me=jid) for k, v in sub.items()} for sub in listed]
        evil.put_items(NODE, [("1", "<note xmlns='urn:example:note'>one</note>")])

        seen = len(log.events)
        await backend.cache.sync(me, evil.jid, NODE)
        assert await synced_state(log, evil.jid, NODE, seen) == outcome
        state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
        reply = await backend.pubsub.get_items(me, evil.jid, NODE, {})
        if outcome == "completed":
            assert state["current"] and reply.from_cache, state
            return
        assert state["state"] == "no_sync" and not state["current"], state
        assert reason in state["reason"], state
        assert not reply.from_cache


async def test_a_node_synchronised_right_after_connecting_is_not_synchronised_again(
    prosody_server: ProsodyServer, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy machine the connection's resync of the profile's cached nodes can run
    after a ``Cache.Sync`` asked right after ``Connect`` has ended: it must not start that
    node's sync again (which showed the node ``in_progress`` once more, just after its
    sync was announced as ended)."""
    async with account_beside_hostile_service(prosody_server, database_url) as (
        me,
        backend,
        log,
        evil,
    ):
        cache = backend.cache
        # The connection's resync is held until the sync below has ended, as a loaded
        # machine may have it; what it asks the scheduler for is written down.
        sync_ended = asyncio.Event()
        resync = cache._resync_profile
        asked: list[int] = []
        schedule = cache.scheduler.schedule

        async def late_resync(*args: Any) -> None:
            await sync_ended.wait()
            await resync(*args)

        def recorded(node_id: int, delay: float = 0.0) -> None:
            asked.append(node_id)
            schedule(node_id, delay)

        monkeypatch.setattr(cache, "_resync_profile", late_resync)
        evil.node(NODE).subscribe_state = "unconfigured"
        evil.put_items(NODE, [("1", "<note xmlns='urn:example:note'>one</note>")])
        await backend.connect(me)
        seen = len(log.events)
        await cache.sync(me, evil.jid, NODE)
        assert await synced_state(log, evil.jid, NODE, seen) == "no_sync"
        record = await backend.db.nodes.get_node(me, evil.jid, NODE)
        assert record is not None and record.extra.get("to_sync")
        monkeypatch.setattr(cache.scheduler, "schedule", recorded)
        sync_ended.set()
        await asyncio.wait_for(asyncio.gather(*cache._background), 60)
        assert record.id not in asked
        assert not cache.scheduler.is_syncing(record.id)
        state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
        assert state["state"] == "no_sync", state
