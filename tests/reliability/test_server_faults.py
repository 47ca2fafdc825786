"""Server faults, for real: a TCP proxy between Roost and the XMPP server breaks the
connection mid-stanza (cut, reset, stall) during a sync and during ordinary calls.

Roost must stay up (other calls answered), say what happened (a named error within a
bounded time, the node's state and reason), recover when the server does (reconnect,
resync, the node ``completed`` with the server's items), and never serve a partial node
as complete.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.errors import NotConnected, XmppError
from roost.service.events import ProfileConnected, ProfileDisconnected, SyncStateChanged
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.fault_proxy import Fault, FaultProxy
from tests.fixtures.node_fill import entry_xml, fill_node
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]

ITEMS = 250
# How long a request may go unanswered here: short, so that a stalled server is noticed
# well within the test's time.
REQUEST_TIMEOUT = 4.0
# A failing call must end within this (the request timeout and a margin for a loaded
# machine); one whose connection was lost, much sooner.
CALL_BOUND = REQUEST_TIMEOUT + 6.0
LOST_BOUND = 3.0
RULES = [{"name": "faults", "node_prefix": "faults-", "type": "blog", "to_sync": True}]
# Past this in an item's payload, so that the items answer is a few hundred kilobytes.
PADDING = "x" * 600


FAULTS_NS = "urn:example:faults"


def children(n: int) -> list[tuple[str, str]]:
    return [("n", str(n)), ("pad", PADDING)]


def payload(n: int) -> str:
    return entry_xml(FAULTS_NS, children(n))


def item_id(n: int) -> str:
    return f"q{n:04d}"


async def node_with_items(server: XmppServer, count: int) -> str:
    """A node of the pubsub component holding ``count`` items, published by another
    client (alice) before Roost looks at it."""
    node = f"faults-{uuid.uuid4().hex[:8]}"
    async with XmppPeer(server, "alice") as peer:
        await peer.create_node(node, {"pubsub#max_items": "max"}, service=server.pubsub_service)
    entries = ((item_id(n), FAULTS_NS, children(n)) for n in range(count))
    await fill_node(server, node, server.jid("alice"), entries)
    return node


@asynccontextmanager
async def behind_proxy(
    tmp_path: Path, server: XmppServer, name: str
) -> AsyncIterator[tuple[Backend, EventLog, FaultProxy]]:
    """A backend on a fresh database whose profile ``bob`` reaches ``server`` through a
    fault proxy; bob connected."""
    config = Config(cache_rules=RULES, request_timeout=REQUEST_TIMEOUT, prefetch=False)
    async with (
        FaultProxy(server.host, server.port) as proxy,
        running_backend(tmp_path / f"{name}.db", server, [], config) as (backend, log),
    ):
        jid, password, _options = server.credentials("bob")
        await backend.profiles.create("bob", jid, password, proxy.options())
        await backend.connect("bob")
        yield backend, log, proxy


def state_changes(log: EventLog, node: str) -> list[str]:
    return [e.state for e in log.of(SyncStateChanged) if e.node == node]


async def wait_node_state(log: EventLog, node: str, state: str, after: int) -> None:
    await log.wait_for(
        lambda e: isinstance(e, SyncStateChanged) and e.node == node and e.state == state,
        f"{state} for {node}",
        after=after,
    )


async def assert_not_served(backend: Backend, service: str, node: str) -> None:
    """No cached answer for the node: offline a NotConnected, online a server answer."""
    try:
        reply = await backend.pubsub.get_items("bob", service, node, {})
    except NotConnected:
        return
    except XmppError:
        return  # the server path was tried (stalled): nothing from the cache
    assert not reply.from_cache, "a node whose sync was cut was served from the cache"


async def assert_whole(backend: Backend, service: str, node: str) -> None:
    """The node completed, served from the cache, with exactly the server's items."""
    state = await backend.pubsub.get_node_state("bob", service, node)
    assert state["state"] == "completed" and state["item_count"] == ITEMS, state
    fresh = await backend.pubsub.get_items("bob", service, node, {"use_cache": False})
    cached = await backend.pubsub.get_items("bob", service, node, {})
    assert cached.from_cache and not fresh.from_cache
    assert [i.id for i in cached.items] == [i.id for i in fresh.items]
    assert len(fresh.items) == ITEMS


async def test_the_proxy_relays_and_breaks_mid_stream(prosody_server: XmppServer) -> None:
    """The proxy on its own: a relayed session, then a cut once a pattern has passed."""
    async with FaultProxy(prosody_server.host, prosody_server.port) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        proxy.arm(Fault.CUT, pattern=b"<stream:features", after=5)
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(4096):
                received += chunk
        writer.close()
        # Exactly five bytes past the pattern reached the client, then the end.
        tail = received[received.index(b"<stream:features") + len(b"<stream:features") :]
        assert len(tail) == 5
        assert proxy.injected == [Fault.CUT] and proxy.fired.is_set()
        # Turned away until resumed, then relayed again.
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        assert await reader.read(10) == b""
        writer.close()
        proxy.resume()
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        async with asyncio.timeout(10):
            assert (await reader.read(100)).startswith(b"<?xml")
        proxy.stall()
        read, sent = proxy.up_read, proxy.up_bytes
        writer.write(b"</stream:stream>")
        # Stalled: read from the client and held, not forwarded; the socket stays open.
        await proxy.wait_sent(read, 10)
        assert proxy.up_bytes == sent and not reader.at_eof()
        proxy.resume()
        # Forwarded once resumed: the server ends its stream too.
        async with asyncio.timeout(10):
            rest = await reader.read()
        assert rest.endswith(b"</stream:stream>")
        writer.close()


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.RESET, Fault.STALL])
async def test_a_sync_broken_mid_page_recovers_and_is_never_served_partial(
    tmp_path: Path, xmpp_server: XmppServer, fault: Fault
) -> None:
    node = await node_with_items(xmpp_server, ITEMS)
    svc = xmpp_server.pubsub_service
    async with behind_proxy(tmp_path, xmpp_server, fault.value) as (backend, log, proxy):
        # Mid-stanza: once the hundredth item's id has passed, in the items answer.
        proxy.arm(fault, pattern=item_id(100).encode(), after=200)
        mark = len(log.events)
        await backend.pubsub.sync("bob", svc, node)
        await asyncio.wait_for(proxy.fired.wait(), CALL_BOUND)
        broke = time.monotonic()
        await wait_node_state(log, node, "error", mark)
        # Said within a bounded time, with the reason.
        assert time.monotonic() - broke < (CALL_BOUND if fault is Fault.STALL else LOST_BOUND)
        state = await backend.pubsub.get_node_state("bob", svc, node)
        assert state["state"] == "error" and not state["current"]
        if fault is Fault.STALL:
            # Before any of the answer came, or in the middle of a streamed one (a
            # service without RSM answers a node whole).
            assert "remote-server-timeout" in state["reason"]
            assert any(
                said in state["reason"] for said in ("did not answer", "sent nothing of its")
            )
        else:
            assert "connection" in state["reason"] and "lost" in state["reason"]
            await log.wait_for(lambda e: isinstance(e, ProfileDisconnected), "a disconnection")
        # Still up: other calls answered; the partial node is not served.
        assert await backend.profiles.list() == ["bob"]
        await backend.settings.set_value("bob", "faults", "k", "s", "v")
        assert await backend.settings.get_values("bob", "faults", ["k"]) == {"k": ("s", "v")}
        await assert_not_served(backend, svc, node)

        # The server comes back: reconnected if need be, resynchronised, complete.
        mark = len(log.events)
        proxy.resume()
        await wait_node_state(log, node, "completed", mark)
        await assert_whole(backend, svc, node)


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.STALL])
async def test_ordinary_calls_end_with_a_named_error_in_bounded_time(
    tmp_path: Path, prosody_server: XmppServer, fault: Fault
) -> None:
    node = await node_with_items(prosody_server, 50)
    svc = prosody_server.pubsub_service
    async with behind_proxy(tmp_path, prosody_server, f"calls-{fault.value}") as (
        backend,
        log,
        proxy,
    ):
        expected: type[Exception] = XmppError if fault is Fault.STALL else NotConnected
        bound = CALL_BOUND if fault is Fault.STALL else LOST_BOUND

        async def during_fault(call: Awaitable[object], what: str) -> None:
            started = time.monotonic()
            with pytest.raises(expected) as caught:
                await asyncio.wait_for(call, CALL_BOUND * 2)
            assert time.monotonic() - started < bound, what
            if isinstance(caught.value, XmppError):
                assert caught.value.name == "Xmpp.RemoteServerTimeout", what

        # A read from the server, broken mid-answer.
        proxy.arm(fault, pattern=item_id(20).encode(), after=50)
        await during_fault(
            backend.pubsub.get_items("bob", svc, node, {"use_cache": False}), "GetItems"
        )
        for call, what in [
            (backend.pubsub.publish("bob", svc, node, "", payload(1), {}), "Publish"),
            (backend.contacts.add("bob", "carol@localhost", {"subscribe": False}), "Add"),
        ]:
            # Recover first, then break the connection while the request is out: a stall,
            # then (for a cut) the cut while the call waits.
            mark = len(log.events)
            proxy.resume()
            if not backend.sessions.is_connected("bob"):
                await log.wait_for(
                    lambda e: isinstance(e, ProfileConnected), "a reconnection", after=mark
                )
            proxy.stall()
            read = proxy.up_read
            task = asyncio.ensure_future(during_fault(call, what))
            if fault is Fault.CUT:
                # The request has left Roost (held by the proxy) when the connection goes.
                await proxy.wait_sent(read, LOST_BOUND)
                proxy.cut()
            await task
        # Up, and back to normal once the server is.
        mark = len(log.events)
        proxy.resume()
        if not backend.sessions.is_connected("bob"):
            await log.wait_for(
                lambda e: isinstance(e, ProfileConnected), "a reconnection", after=mark
            )
        reply = await backend.pubsub.get_items("bob", svc, node, {"use_cache": False})
        assert len(reply.items) == 50


async def test_a_resync_cut_before_writing_leaves_the_complete_copy_served_offline(
    tmp_path: Path, xmpp_server: XmppServer
) -> None:
    """The node's complete copy, read offline, survives a resync cut short while it only
    listed or fetched: the copy is still whole (as of the first disconnection), so it is
    served with its age; the node is still not served online until resynchronised."""
    node = await node_with_items(xmpp_server, ITEMS)
    svc = xmpp_server.pubsub_service
    async with behind_proxy(tmp_path, xmpp_server, "offline") as (backend, log, proxy):
        mark = len(log.events)
        await backend.pubsub.sync("bob", svc, node)
        await wait_node_state(log, node, "completed", mark)
        before = await backend.pubsub.get_items("bob", svc, node, {"use_cache": False})
        proxy.cut()
        await log.wait_for(lambda e: isinstance(e, ProfileDisconnected), "a disconnection")
        offline = await backend.pubsub.get_items("bob", svc, node, {})
        assert offline.from_cache and offline.cache_age is not None
        # Back, and cut again while the resync lists the node's items.
        mark = len(log.events)
        proxy.resume()
        proxy.arm(Fault.CUT, pattern=item_id(100).encode(), after=20)
        await wait_node_state(log, node, "error", mark)
        assert proxy.fired.is_set()
        if backend.sessions.is_connected("bob"):
            await log.wait_for(
                lambda e: isinstance(e, ProfileDisconnected), "a disconnection", after=mark
            )
        state = await backend.pubsub.get_node_state("bob", svc, node)
        assert state["state"] == "error" and "lost" in state["reason"]
        again = await backend.pubsub.get_items("bob", svc, node, {})
        assert again.from_cache and again.cache_age is not None
        assert again.cache_age >= offline.cache_age
        assert [i.id for i in again.items] == [i.id for i in before.items]
        # Online again: resynchronised before the cache answers.
        mark = len(log.events)
        proxy.resume()
        await wait_node_state(log, node, "completed", mark)
        await assert_whole(backend, svc, node)
