"""A sync from a server that lies: its RSM pages never end, repeat ids, or announce a
count that jumps from one page to the next (docs/security.md, "Every sync bounded").

The server is ``evil.localhost``, an external component of the test Prosody answering
pubsub from memory (tests/fixtures/hostile.py). Whatever it sends, a sync ends, stores
at most ``[cache] max_items_per_node`` items, and a node whose pages do not converge is
in ``error`` with the reason, never served from the cache. An honest node larger than
the limit keeps exactly its newest items, and the cache answers for the newest N as the
server does.

Prosody only: the component lives there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.events import SyncProgress, SyncStateChanged
from roost.service.pubsub.model import ItemsReply
from roost.service.pubsub.rsm import decode_token
from tests.contacts.test_strangers import ARRIVAL, COMMENTS, entry
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.hostile import ENDLESS_COUNT, HostileService
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = pytest.mark.xmpp

# The cache's item limit in these tests, and the most items a page of the service holds.
LIMIT = 20
PAGE_CAP = 5
# The item of the first query to a service, which learns whether it pages by RSM.
PROBE = 1
NODE = "urn:example:paged"


async def sync_to_end(backend: Backend, log: EventLog, me: str, service: str, node: str) -> str:
    """Start the node's sync and return the state it ends in (``completed`` or ``error``)."""
    seen = len(log.events)
    await backend.cache.sync(me, service, node)
    return await ended(log, service, node, seen)


async def ended(log: EventLog, service: str, node: str, after: int) -> str:
    """The state the node's sync ends in, from the ``after``-th event on."""
    event = await log.wait_for(
        lambda e: (
            isinstance(e, SyncStateChanged)
            and (e.service, e.node) == (service, node)
            and e.state in ("completed", "error")
        ),
        f"the end of the sync of {service}/{node}",
        after=after,
        limit=ARRIVAL,
    )
    assert isinstance(event, SyncStateChanged)
    return event.state


def most_stored(log: EventLog, service: str, node: str) -> int:
    """The most items the node's syncs said they had stored."""
    return max(
        (e.done for e in log.of(SyncProgress) if (e.service, e.node) == (service, node)),
        default=0,
    )


@pytest.mark.parametrize(
    ("mode", "held", "outcome"),
    [
        # 10^9 items announced: the walk goes back from the newest and stops at the limit.
        ("endless", 0, "completed"),
        # Forwards (the node within the limit) and backwards (past it).
        ("repeating", 15, "came twice"),
        ("repeating", 50, "came twice"),
        ("growing_count", 15, "its count went from"),
        ("growing_count", 50, "its count went from"),
        # A page after the first, taken in as it arrived, ends without its <set/>.
        ("set_dropped", 15, "without its RSM"),
        # Walking back from the newest, a page before an item ends without it.
        ("set_dropped", 50, "without its RSM"),
    ],
)
async def test_a_sync_of_pages_that_do_not_converge_ends_within_the_limit(
    prosody_server: ProsodyServer, tmp_path: Path, mode: str, held: int, outcome: str
) -> None:
    server = prosody_server
    (me,) = unique_names("pages", 1)
    await server.register_many([me])
    config = Config(max_items_per_node=LIMIT)
    async with (
        running_backend(tmp_path / "roost.sqlite", server, [me], config) as (backend, log),
        HostileService(server) as evil,
    ):
        await backend.connect(me)
        node = evil.node(NODE)
        node.rsm, node.page_cap = mode, PAGE_CAP
        evil.put_items(NODE, [(f"item-{n}", entry("item", n)) for n in range(held)])
        # The person's choice: the node is theirs to hear, and to cache.
        await backend.pubsub.subscribe(me, evil.jid, NODE, {})

        state = await sync_to_end(backend, log, me, evil.jid, NODE)
        node_state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
        assert most_stored(log, evil.jid, NODE) <= LIMIT
        assert node_state["item_count"] <= LIMIT, node_state
        # The walk asked for no more than the limit (and the one page that found the
        # node was past it, after the probe of the service's RSM).
        assert node.served_items <= PROBE + LIMIT + PAGE_CAP, node.served

        if outcome == "completed":
            assert state == "completed", node_state
            assert node_state["item_count"] == LIMIT and node_state["current"], node_state
            reply = await backend.pubsub.get_items(me, evil.jid, NODE, {"max_items": LIMIT})
            assert reply.from_cache and reply.rsm_count == ENDLESS_COUNT
            # The pages walked back from the newest (the probe's item and the first
            # page, which found the node, are older than them all).
            first = PROBE + PAGE_CAP
            walked = {f"endless-{n}" for n in range(first, first + LIMIT)}
            assert {i.id for i in reply.items} == walked
            return
        assert state == "error", node_state
        assert node_state["state"] == "error", node_state
        assert "do not converge" in node_state["reason"], node_state
        assert outcome in node_state["reason"], node_state
        assert not node_state["current"], node_state
        reply = await backend.pubsub.get_items(me, evil.jid, NODE, {})
        assert not reply.from_cache


async def test_an_endless_node_read_by_a_frontend_is_cached_within_the_limit(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    """The way a node reaches the cache without Sync: a frontend reads it, the analyser
    knows it (a comments node of Atom entries), and the cache syncs it."""
    server = prosody_server
    (me,) = unique_names("endless", 1)
    await server.register_many([me])
    comments = f"{COMMENTS}x"
    config = Config(max_items_per_node=LIMIT)
    async with (
        running_backend(tmp_path / "roost.sqlite", server, [me], config) as (backend, log),
        HostileService(server) as evil,
    ):
        await backend.connect(me)
        node = evil.node(comments)
        node.rsm, node.page_cap = "endless", PAGE_CAP
        node.made_up = lambda item_id: entry(item_id, 0)
        seen = len(log.events)
        first = await backend.pubsub.get_items(me, evil.jid, comments, {})
        assert not first.from_cache and len(first.items) == PAGE_CAP
        assert await ended(log, evil.jid, comments, seen) == "completed"
        node_state = await backend.pubsub.get_node_state(me, evil.jid, comments)
        assert node_state["analyser"], node_state
        assert node_state["item_count"] == LIMIT and node_state["current"], node_state
        assert most_stored(log, evil.jid, comments) <= LIMIT
        # The probe, the read, the page that found the node past the limit, and the
        # limit itself.
        assert node.served_items <= PROBE + 2 * PAGE_CAP + LIMIT, node.served


HONEST_HELD = 50


async def honest_node_past_the_limit(
    backend: Backend, log: EventLog, evil: HostileService, me: str
) -> list[str]:
    """Sync an honest RSM node of :data:`HONEST_HELD` items, paged by 7, under the limit
    of :data:`LIMIT`; its item ids, oldest first."""
    cap = 7
    node = evil.node(NODE)
    node.rsm, node.page_cap = "honest", cap
    everything = [f"item-{n}" for n in range(HONEST_HELD)]
    evil.put_items(NODE, [(item_id, entry("item", n)) for n, item_id in enumerate(everything)])
    await backend.pubsub.subscribe(me, evil.jid, NODE, {})

    assert await sync_to_end(backend, log, me, evil.jid, NODE) == "completed"
    node_state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
    assert node_state["item_count"] == LIMIT and node_state["current"], node_state
    assert most_stored(log, evil.jid, NODE) <= LIMIT
    assert node.served_items <= PROBE + LIMIT + cap, node.served
    # The server now answers any page whole, as the cache does, so that the two agree.
    node.page_cap = HONEST_HELD
    return everything


async def same_newest(backend: Backend, me: str, service: str, newest: int) -> ItemsReply:
    """GetItems(max_items=newest) from the cache and from the server agree; the cached."""
    cached = await backend.pubsub.get_items(me, service, NODE, {"max_items": newest})
    fresh = await backend.pubsub.get_items(
        me, service, NODE, {"max_items": newest, "use_cache": False}
    )
    assert cached.from_cache and not fresh.from_cache, newest
    assert [(i.id, i.xml) for i in cached.items] == [(i.id, i.xml) for i in fresh.items]
    assert cached.rsm_count == fresh.rsm_count == HONEST_HELD, newest
    # Tokens are opaque (the server path's carry the server's own), but name the same items.
    for token in ("rsm_first", "rsm_last"):
        ours, theirs = getattr(cached, token), getattr(fresh, token)
        assert decode_token(ours)[0] == decode_token(theirs)[0], (newest, token)
    assert cached.metadata().keys() == fresh.metadata().keys(), newest
    assert cached.complete == fresh.complete, newest
    return cached


async def test_an_honest_node_past_the_limit_keeps_its_newest_and_answers_as_the_server(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    server = prosody_server
    (me,) = unique_names("honest", 1)
    await server.register_many([me])
    config = Config(max_items_per_node=LIMIT)
    async with (
        running_backend(tmp_path / "roost.sqlite", server, [me], config) as (backend, log),
        HostileService(server) as evil,
    ):
        await backend.connect(me)
        everything = await honest_node_past_the_limit(backend, log, evil, me)
        # LIMIT itself: all the cache keeps, still not the whole node (incomplete).
        for newest in (1, 5, LIMIT - 1, LIMIT):
            cached = await same_newest(backend, me, evil.jid, newest)
            assert [i.id for i in cached.items] == everything[-newest:]
        # What the cache does not hold is the server's to answer.
        for options in ({"max_items": LIMIT + 1}, {}):
            reply = await backend.pubsub.get_items(me, evil.jid, NODE, options)
            assert not reply.from_cache, options
