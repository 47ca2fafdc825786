"""The pubsub cache against Prosody and ejabberd: sync, transparency, events, resync."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from lxml import etree

from roost.service.cache.analysers import Analyser, AnalyserRegistry
from roost.service.cache.cache import PubsubCache
from roost.service.cache.microblog import parse_microblog_entry
from roost.service.cache.source import SyncSource, XmppSyncSource
from roost.service.events import EventHub, ItemsEvent, SyncStateChanged
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.reader import AccountLookup
from roost.service.pubsub.server import PubsubServer
from roost.service.pubsub_stack import CacheOptions, build_pubsub_stack
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database
from roost.storage.item_records import ItemInput
from tests.fixtures.node_fill import entry_xml, fill_node
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

ATOM = "http://www.w3.org/2005/Atom"


def entry_children(n: int, title: str | None = None) -> list[tuple[str, str]]:
    """The children of :func:`entry`'s payload, as (element name, text) pairs (how
    :func:`~tests.fixtures.node_fill.fill_node` takes them)."""
    stamp = f"2026-01-01T00:00:{n % 60:02d}Z"
    return [
        ("id", f"urn:uuid:{n}"),
        ("title", title or f"Post {n}"),
        ("content", f"Body of post {n} word{n}"),
        ("published", stamp),
        ("updated", stamp),
    ]


def entry(n: int, title: str | None = None) -> str:
    """Post ``n`` of a blog, as an Atom entry."""
    return entry_xml(ATOM, entry_children(n, title))


class Roost:
    """A service-level Roost: database, sessions, and the daemon's pubsub stack."""

    def __init__(self, db: Database, sessions: SessionManager, hub: EventHub) -> None:
        self.db = db
        self.sessions = sessions
        self.hub = hub
        registry = AnalyserRegistry()
        registry.register_analyser(
            Analyser(
                name="test-blog",
                node_prefix="blog-",
                namespace=ATOM,
                type="blog",
                to_sync=True,
                parser=parse_microblog_entry,
                indexed_keys=("title",),
            )
        )
        self.stack = build_pubsub_stack(
            db, sessions, hub, registry, options=CacheOptions(max_items_per_node=5000)
        )

    @property
    def pubsub(self) -> PubsubService:
        """What frontends call."""
        return self.stack.service

    @property
    def server(self) -> PubsubServer:
        """The server side the cache's syncs use."""
        return self.stack.server

    @property
    def cache(self) -> PubsubCache:
        """The cache of the stack running now."""
        return self.stack.cache

    @asynccontextmanager
    async def restarted_cache(
        self,
        source: SyncSource | None = None,
        registry: AnalyserRegistry | None = None,
        accounts: AccountLookup | None = None,
        **options: Any,
    ) -> AsyncIterator[PubsubCache]:
        """The pubsub stack closed and replaced by a new one on the same database and
        sessions, as after a restart; by default with the same analysers."""
        registry = registry or self.cache.registry
        await self.stack.close()
        self.stack = build_pubsub_stack(
            self.db,
            self.sessions,
            self.hub,
            registry,
            options=CacheOptions(**options),
            source=source,
            accounts=accounts,
        )
        await self.stack.start()
        try:
            yield self.stack.cache
        finally:
            await self.stack.close()


async def cached_reply(
    roost: Roost, profile: str, service: str, node: str, request: ItemsRequest | None = None
) -> ItemsReply:
    """GetItems once the cache answers it: Roost holds a node back while it changes it,
    until the server's notification is applied."""
    for _ in range(100):
        reply = await roost.pubsub.get_items(profile, service, node, request or ItemsRequest())
        if reply.from_cache:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node} is never answered from the cache")


@pytest.fixture
async def roost(
    database_url: str, sessions: SessionManager, hub: EventHub, xmpp_server: XmppServer
) -> AsyncIterator[Roost]:
    db = await Database.open(database_url)
    for user in ("alice", "bob"):
        jid, password, options = xmpp_server.credentials(user)
        await db.profiles.create_profile(user, jid, password, dict(options))
    r = Roost(db, sessions, hub)
    await r.stack.start()
    await sessions.connect("alice")
    await sessions.connect("bob")
    yield r
    await r.stack.close()
    await sessions.close()
    await db.close()


async def wait_state(recorder: Recorder, node: str, state: str, *, after: int = 0) -> None:
    for _ in range(600):
        changes = [e for e in recorder.of(SyncStateChanged) if e.node == node]
        if any(e.state == state for e in changes[after:]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{node} never reached {state}: {[e.state for e in recorder.of(SyncStateChanged)]}"
    )


async def make_blog(roost: Roost, server: XmppServer, count: int) -> str:
    node = f"blog-{uuid.uuid4().hex[:8]}"
    await roost.pubsub.create_node(
        "alice", server.pubsub_service, node, {"pubsub#max_items": "10000"}
    )
    for n in range(count):
        await roost.pubsub.publish("alice", server.pubsub_service, node, f"p{n:03d}", entry(n))
    return node


def canonical(xml: str) -> str:
    return etree.tostring(etree.fromstring(xml.encode()), method="c14n").decode()


def same(cached: ItemsReply, server: ItemsReply) -> None:
    assert cached.from_cache and not server.from_cache
    assert [i.id for i in cached.items] == [i.id for i in server.items]
    assert [i.publisher for i in cached.items] == [i.publisher for i in server.items]
    assert [canonical(i.xml) for i in cached.items] == [canonical(i.xml) for i in server.items]
    assert cached.rsm_count == server.rsm_count
    assert cached.complete == server.complete


async def both(roost: Roost, server: XmppServer, node: str, **options: Any) -> ItemsReply:
    svc = server.pubsub_service
    cached = await roost.pubsub.get_items(
        "bob", svc, node, ItemsRequest.from_options({**options, "use_cache": True})
    )
    fresh = await roost.pubsub.get_items(
        "bob", svc, node, ItemsRequest.from_options({**options, "use_cache": False})
    )
    same(cached, fresh)
    return cached


async def filled_blog(roost: Roost, server: XmppServer, count: int) -> str:
    """A blog of ``count`` posts whose items were written to the server's store, as
    another client's years of publishing would leave it (publishing hundreds of items one
    by one takes Prosody tens of seconds)."""
    node = f"blog-{uuid.uuid4().hex[:8]}"
    await roost.pubsub.create_node(
        "alice", server.pubsub_service, node, {"pubsub#max_items": "10000"}
    )
    entries = ((f"p{n:03d}", ATOM, entry_children(n)) for n in range(count))
    await fill_node(server, node, server.jid("alice"), entries)
    return node


async def synced_blog(
    roost: Roost, server: XmppServer, recorder: Recorder, count: int, *, filled: bool = False
) -> str:
    node = await (filled_blog if filled else make_blog)(roost, server, count)
    first = await roost.pubsub.get_items(
        "bob", server.pubsub_service, node, ItemsRequest(use_cache=True)
    )
    assert not first.from_cache  # not analysed yet: the server answers, the sync starts
    await wait_state(recorder, node, "completed")
    return node


async def test_transparent_reads(roost: Roost, xmpp_server: XmppServer, recorder: Recorder) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 300, filled=True)
    state = await roost.cache.get_node_state("bob", xmpp_server.pubsub_service, node)
    assert state["state"] == "completed" and state["item_count"] == 300
    assert state["analyser"] == "test-blog" and state["type"] == "blog"
    await both(roost, xmpp_server, node)
    for n in (1, 20, 300, 1000):
        await both(roost, xmpp_server, node, max_items=n)
    await both(roost, xmpp_server, node, item_ids=["p007", "p250", "p100", "nope"])
    # Walk forward from the cache, continuing each page alternately on either path.
    seen: list[str] = []
    after = ""
    use_cache = True
    while True:
        reply = await roost.pubsub.get_items(
            "bob",
            xmpp_server.pubsub_service,
            node,
            ItemsRequest(max_items=45, after=after, use_cache=use_cache),
        )
        assert reply.from_cache == use_cache
        assert reply.rsm_count == 300
        seen += [i.id for i in reply.items]
        if reply.complete:
            break
        assert reply.rsm_last is not None
        after, use_cache = reply.rsm_last, not use_cache
    assert seen == [f"p{n:03d}" for n in range(300)]
    # Backward, comparing each page on both paths.
    page = await both(roost, xmpp_server, node, max_items=70, before="")
    while not page.complete:
        assert page.rsm_first is not None
        page = await both(roost, xmpp_server, node, max_items=70, before=page.rsm_first)
    # A token from the server path continues on the cache path.
    fresh = await roost.pubsub.get_items(
        "bob",
        xmpp_server.pubsub_service,
        node,
        ItemsRequest(max_items=10, use_cache=False, after=""),
    )
    assert fresh.rsm_last is not None
    await both(roost, xmpp_server, node, max_items=10, after=fresh.rsm_last)


async def test_events_reach_the_cache_before_frontends(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder, hub: EventHub
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    svc = xmpp_server.pubsub_service
    seen_in_cache: list[tuple[str, list[str]]] = []

    def check(event: Any) -> None:
        # Runs when the event is published: the cache must hold its effect already.
        if isinstance(event, ItemsEvent) and event.node == node and event.profile == "bob":
            seen_in_cache.append((event.kind, [i["id"] for i in event.items]))

    hub.subscribe(check)
    items = roost.db.items
    record = await roost.db.nodes.get_node("bob", svc, node)
    assert record is not None

    async def until(kind: str, item_id: str | None = None) -> None:
        # Wait for this very event: ejabberd also sends the node's last item when bob
        # subscribes, and under load that notice can come after the sync has completed.
        for _ in range(200):
            if any(k == kind and (item_id is None or item_id in ids) for k, ids in seen_in_cache):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} event for {item_id}")

    await roost.pubsub.publish("alice", svc, node, "p900", entry(900, "Fresh post"))
    await until("items", "p900")
    stored = await items.get_item(record.id, "p900")
    assert stored is not None and stored.parsed["title"] == "Fresh post"
    await roost.pubsub.publish("alice", svc, node, "p001", entry(1, "Changed post"))
    # Once its event is out, the change is stored and the node is served again (Roost
    # holds back a node it is changing until the server's notification is applied).
    await until("items", "p001")
    stored = await items.get_item(record.id, "p001")
    assert stored is not None and stored.parsed["title"] == "Changed post"
    await both(roost, xmpp_server, node)
    await roost.pubsub.retract("alice", svc, node, ["p002"], {})
    await until("retract", "p002")
    assert await items.get_item(record.id, "p002") is None
    await both(roost, xmpp_server, node)
    await roost.pubsub.purge_node("alice", svc, node)
    await until("purge")
    assert await items.count_items(record.id) == 0
    await both(roost, xmpp_server, node)
    await roost.pubsub.delete_node("alice", svc, node)
    await until("delete")
    assert await roost.db.nodes.get_node("bob", svc, node) is None


async def test_search_and_parse_failure(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_blog(roost, xmpp_server, 30)
    svc = xmpp_server.pubsub_service
    # Not an Atom entry: the parser refuses it, the item is stored raw.
    await roost.pubsub.publish(
        "alice", svc, node, "odd", "<note xmlns='urn:example:other'>strange words</note>"
    )
    await roost.pubsub.get_items("bob", svc, node, ItemsRequest())
    await wait_state(recorder, node, "completed")
    hits = await roost.cache.search({"fts": "word17", "nodes": [node]})
    assert [h["id"] for h in hits] == ["p017"]
    hits = await roost.cache.search(
        {"nodes": [node], "parsed": [{"path": "title", "op": "eq", "value": "Post 7"}]}
    )
    assert [h["id"] for h in hits] == ["p007"]
    assert hits[0]["profile"] == "bob" and hits[0]["node"] == node
    record = await roost.db.nodes.get_node("bob", svc, node)
    assert record is not None
    odd = await roost.db.items.get_item(record.id, "odd")
    assert odd is not None
    assert odd.parsed is None
    assert "strange words" in odd.data
    assert any(
        "'odd'" in r.getMessage() and "parser failed" in r.getMessage() for r in caplog.records
    )
    assert (await roost.cache.get_node_state("bob", svc, node))["item_count"] == 31


class CountingSource(XmppSyncSource):
    """Counts what a sync fetches from the server."""

    # ejabberd sends the last item of every subscribed node at connection, so other
    # tests' nodes get analysed and synced too: count per node.

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.fetched_by_id: dict[str, list[str]] = {}
        self.fetched_whole: dict[str, int] = {}

    async def fetch_items_by_id(
        self, profile: str, service: str, node: str, item_ids: list[str]
    ) -> Any:
        self.fetched_by_id.setdefault(node, []).extend(item_ids)
        return await super().fetch_items_by_id(profile, service, node, item_ids)

    async def _count(self, node: str, pages: Any) -> Any:
        async for page in pages:
            self.fetched_whole[node] = self.fetched_whole.get(node, 0) + len(page)
            yield page

    def fetch_all_items(
        self, profile: str, service: str, node: str, page_size: int, *, newest: int | None = None
    ) -> Any:
        pages = super().fetch_all_items(profile, service, node, page_size, newest=newest)
        return self._count(node, pages)


async def published_while_away(roost: Roost, server: XmppServer, recorder: Recorder) -> str:
    """A node of 40 items synchronised, then Roost stopped (its cache closed, bob
    offline) while alice published 5 more: the node a restart finds changed."""
    node = await synced_blog(roost, server, recorder, 40)
    await roost.cache.close()
    await roost.sessions.disconnect("bob")
    for n in range(40, 45):
        await roost.pubsub.publish("alice", server.pubsub_service, node, f"p{n:03d}", entry(n))
    return node


async def test_restart_resyncs_incrementally_before_serving(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder, hub: EventHub
) -> None:
    node = await published_while_away(roost, xmpp_server, recorder)
    svc = xmpp_server.pubsub_service
    await roost.pubsub.retract("alice", svc, node, ["p003", "p010"], {})
    # Roost starts again on the same database.
    source = CountingSource(roost.server, roost.sessions)
    # (The old cache is closed already; closing it again is a no-op.)
    async with roost.restarted_cache(source) as cache:
        mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
        # Not current before the resync: the server answers.
        assert await cache.answer("bob", svc, node, ItemsRequest()) is None
        await roost.sessions.connect("bob")
        await wait_state(recorder, node, "completed", after=mark)
        assert source.fetched_by_id[node] == [f"p{n:03d}" for n in range(40, 45)]
        assert node not in source.fetched_whole
        await both(roost, xmpp_server, node)
        state = await cache.get_node_state("bob", svc, node)
        assert state["item_count"] == 43 and state["current"]


async def test_a_resync_after_the_newest_item_came_by_notification_stays_incremental(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    # ejabberd sends each subscribed node's last item when a session starts: the cache
    # can hold a node's newest item before its resync has fetched the ones published
    # before it while Roost was away.
    node = await published_while_away(roost, xmpp_server, recorder)
    svc = xmpp_server.pubsub_service
    # What the notification of the newest item stores, there before the resync.
    [newest] = (
        await roost.pubsub.get_items(
            "alice", svc, node, ItemsRequest(item_ids=["p044"], use_cache=False)
        )
    ).items
    record = await roost.db.nodes.get_node("bob", svc, node)
    assert record is not None
    await roost.db.items.upsert_items(
        record.id, [ItemInput(newest.id, newest.publisher, newest.xml, None, "")]
    )
    source = CountingSource(roost.server, roost.sessions)
    async with roost.restarted_cache(source) as cache:
        mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
        await roost.sessions.connect("bob")
        await wait_state(recorder, node, "completed", after=mark)
        # The items from the first one missing on: the newest is fetched again and
        # stored after those published before it.
        assert source.fetched_by_id[node] == [f"p{n:03d}" for n in range(40, 45)]
        assert node not in source.fetched_whole
        await both(roost, xmpp_server, node)
        state = await cache.get_node_state("bob", svc, node)
        assert state["item_count"] == 45 and state["current"]


async def test_disconnection_stops_serving_until_resynced(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 3)
    svc = xmpp_server.pubsub_service
    assert await roost.cache.answer("bob", svc, node, ItemsRequest()) is not None
    await roost.sessions.disconnect("bob")
    assert await roost.cache.answer("bob", svc, node, ItemsRequest()) is None
    mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
    await roost.sessions.connect("bob")
    await wait_state(recorder, node, "completed", after=mark)
    assert await roost.cache.answer("bob", svc, node, ItemsRequest()) is not None


async def test_a_read_after_roosts_own_write_sees_it(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    await write_and_read_back(roost, xmpp_server, node)


async def write_and_read_back(roost: Roost, xmpp_server: XmppServer, node: str) -> None:
    """alice publishes and retracts on the node; bob reads after each change and sees it,
    and once the notifications are in, the cache serves the node as the server has it."""
    svc = xmpp_server.pubsub_service
    for n in range(10, 20):
        await roost.pubsub.publish("alice", svc, node, f"p{n:03d}", entry(n))
        reply = await roost.pubsub.get_items("bob", svc, node, ItemsRequest(max_items=1))
        assert [i.id for i in reply.items] == [f"p{n:03d}"]
        await roost.pubsub.retract("alice", svc, node, ["p000"] if n == 10 else [f"p{n - 1:03d}"])
        reply = await roost.pubsub.get_items("bob", svc, node, ItemsRequest())
        assert f"p{n - 1:03d}" not in [i.id for i in reply.items]
    # Once the notifications are in, the cache serves the node again.
    await cached_reply(roost, "bob", svc, node)
    await both(roost, xmpp_server, node)
