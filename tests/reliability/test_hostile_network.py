"""Hostile input from the network: items nested thousands of elements deep, items over the
size limit arriving by notification, roster pushes from someone other than the server, and
notifications claiming another publisher or node.

The hostile party is ``evil.localhost``, an external component of the test Prosody
(``tests/fixtures/hostile.py``), and other accounts' clients. Roost must stay up, keep the
session, store nothing it cannot handle but raw, log why, and never serve a node as
complete with an item missing. docs/reliability.md ("Hostile input from the network")
gives each case and its bound.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from slixmpp import BaseXMPP
from slixmpp.exceptions import IqError

from roost.bridge.client import RoostClient
from roost.service.backend import Backend
from roost.service.cache.stored_form import MAX_STORED_ITEM_BYTES
from roost.service.events import ContactChanged, ItemsEvent
from roost.service.safe_xml import MAX_XML_DEPTH
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.hostile import NS_EVENT, NS_PUBSUB, HostileService
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import ProsodyServer, XmppServer
from tests.reliability.test_hostile_server import hostile_world, new_node, stored_ids
from tests.reliability.test_server_faults import payload, wait_node_state

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]

NS_DEEP = "urn:example:deep"
# Prosody routes no stanza nested much past 70,000 elements: its stanza code recurses and
# the Lua stack overflows (its log says "stack overflow" and the stanza is dropped). The
# deepest that crosses it; 100,000 is fed to the client's stream directly.
ROUTED_DEPTH = 60_000
ARRIVAL = 30.0
MICROBLOG = "urn:xmpp:microblog:0"
NS_ROSTER = "jabber:iq:roster"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TEXT = f"{{{NS_STANZAS}}}text"
ATOM_ENTRY = (
    "<entry xmlns='http://www.w3.org/2005/Atom'><id>urn:uuid:post</id><title>A post</title>"
    "<published>2026-01-01T00:00:00Z</published><updated>2026-01-01T00:00:00Z</updated>"
    "</entry>"
)


def deep(depth: int, marker: str = "bottom") -> str:
    """A payload nesting ``depth`` elements."""
    return f"<a xmlns='{NS_DEEP}'>" + "<a>" * (depth - 1) + marker + "</a>" * depth


def query_form(item_id: str, text: str) -> str:
    """The item as Roost stores and answers it (an items query's form)."""
    written = text.replace(f"<a xmlns='{NS_DEEP}'>", f'<a xmlns="{NS_DEEP}">', 1)
    return f'<item xmlns="http://jabber.org/protocol/pubsub" id="{item_id}">{written}</item>'


class StreamLog(logging.Handler):
    """slixmpp's stream log at debug (every stanza in full), formatted as a daemon's log
    handler formats it; formatting errors are kept instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures.append(f"{record.msg!r}: {sys.exc_info()[0]}")


@contextmanager
def stream_logged() -> Iterator[StreamLog]:
    """slixmpp's stream logger at debug, into a :class:`StreamLog`."""
    logger = logging.getLogger("slixmpp.xmlstream.xmlstream")
    handler = StreamLog()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records no hostile input may cause: errors, and logging's own failures."""
    return [
        r.getMessage()[:300]
        for r in caplog.records
        if r.levelno >= logging.ERROR or "RecursionError" in (r.exc_text or "")
    ]


def sessions_of(backend: Backend) -> SessionManager:
    assert isinstance(backend.sessions, SessionManager)
    return backend.sessions


def still_connected(backend: Backend) -> bool:
    return sessions_of(backend).is_connected("bob")


async def stored_xml(backend: Backend, service: str, node: str, item_id: str) -> str:
    reply = await backend.pubsub.get_items("bob", service, node, {"item_ids": [item_id]})
    assert reply.from_cache
    (item,) = reply.items
    return str(item.xml)


def stored_raw(caplog: pytest.LogCaptureFixture, item_id: str, why: str) -> bool:
    return any(
        f"'{item_id}'" in r.getMessage()
        and "stored raw" in r.getMessage()
        and why in r.getMessage()
        for r in caplog.records
    )


async def notified(log: EventLog, node: str, mark: int) -> ItemsEvent:
    """The first ItemsEvent of ``node`` from the ``mark``-th event on, waited for."""
    event = await log.wait_for(
        lambda e: isinstance(e, ItemsEvent) and e.node == node,
        f"the notification of {node}",
        after=mark,
        limit=ARRIVAL,
    )
    assert isinstance(event, ItemsEvent)
    return event


async def synced(backend: Backend, log: EventLog, evil: HostileService, node: str) -> None:
    mark = len(log.events)
    await backend.pubsub.sync("bob", evil.jid, node)
    await wait_node_state(log, node, "completed", mark)


# -- deep nesting -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [10_000, ROUTED_DEPTH])
async def test_a_deeply_nested_item_in_a_query_answer_is_kept_raw_and_the_node_whole(
    tmp_path: Path, prosody_server: XmppServer, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        text = deep(depth)
        evil.put_items(node, [("small", payload(1)), ("deep", text), ("after", payload(2))])
        with stream_logged() as stream:
            await synced(backend, log, evil, node)
        assert sorted(await stored_ids(backend, evil.jid, node)) == ["after", "deep", "small"]
        # Kept exactly as received, not parsed, not indexed; logged by id with the bound.
        assert await stored_xml(backend, evil.jid, node, "deep") == query_form("deep", text)
        assert stored_raw(caplog, "deep", f"{MAX_XML_DEPTH} levels")
        assert await backend.pubsub.search({"fts": "bottom", "nodes": [node]}) == []
        # The node is whole: the cache answers every item, the deep one included.
        whole = await backend.pubsub.get_items("bob", evil.jid, node, {})
        assert whole.from_cache and whole.complete
        assert [i.id for i in whole.items] == ["small", "deep", "after"]
        # The service has no RSM: its answer came streamed, the items taken out of it as
        # they were parsed, so the stream log at debug shows the answer's shell and
        # never the deep item (a deep stanza that does reach it is shown by its name and
        # depth: the notification's test below). The SENDs are the hostile component's.
        received = [line for line in stream.lines if line.startswith("RECV: ")]
        assert received and not any("bottom" in line for line in received)
        assert stream.failures == []
        assert problems(caplog) == []
        assert still_connected(backend)


@pytest.mark.parametrize("depth", [10_000, ROUTED_DEPTH])
async def test_a_deeply_nested_item_in_a_notification_is_kept_raw(
    tmp_path: Path, prosody_server: XmppServer, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [("small", payload(1))])
        await synced(backend, log, evil, node)
        full = sessions_of(backend).client("bob").boundjid.full
        text = deep(depth)
        mark = len(log.events)
        with stream_logged() as stream:
            evil.send_event(full, node, [("deep", text)])
            event = await notified(log, node, mark)
        assert isinstance(event, ItemsEvent) and event.complete
        assert [raw["xml"] for raw in event.items] == [query_form("deep", text)]
        assert await stored_xml(backend, evil.jid, node, "deep") == query_form("deep", text)
        assert stored_raw(caplog, "deep", f"{MAX_XML_DEPTH} levels")
        whole = await backend.pubsub.get_items("bob", evil.jid, node, {})
        assert whole.from_cache and whole.complete
        assert [i.id for i in whole.items] == ["small", "deep"]
        assert "RECV: [{jabber:client}message: " in "\n".join(stream.lines)
        assert stream.failures == []
        assert problems(caplog) == []
        assert still_connected(backend)


# -- items over the size limit, by notification -------------------------------------------


async def test_an_item_over_the_size_limit_in_a_notification_is_kept_raw(
    tmp_path: Path, prosody_server: XmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [("small", payload(1))])
        await synced(backend, log, evil, node)
        full = sessions_of(backend).client("bob").boundjid.full
        huge = f"<entry xmlns='urn:example:faults'><pad>{'y' * MAX_STORED_ITEM_BYTES}</pad></entry>"
        mark = len(log.events)
        evil.send_event(full, node, [("huge", huge), ("after", payload(2))])
        event = await notified(log, node, mark)
        assert isinstance(event, ItemsEvent) and event.complete
        assert [raw["id"] for raw in event.items] == ["huge", "after"]
        # Kept as the query path keeps it: as received, neither parsed nor indexed, and
        # logged by id and size; the item after it in the notification is stored too.
        written = huge.replace(
            "<entry xmlns='urn:example:faults'>", '<entry xmlns="urn:example:faults">'
        )
        assert await stored_xml(backend, evil.jid, node, "huge") == query_form("huge", written)
        assert stored_raw(caplog, "huge", f"over the {MAX_STORED_ITEM_BYTES} bytes")
        assert await backend.pubsub.search({"fts": "y" * 20, "nodes": [node]}) == []
        whole = await backend.pubsub.get_items("bob", evil.jid, node, {})
        assert whole.from_cache and whole.complete
        assert [i.id for i in whole.items] == ["small", "huge", "after"]
        assert problems(caplog) == []
        assert still_connected(backend)


# -- notifications claiming someone else -----------------------------------------------------


async def test_a_publisher_claimed_by_a_notification_is_replaced_by_what_a_query_says(
    tmp_path: Path, prosody_server: XmppServer
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [("small", payload(1))])
        await synced(backend, log, evil, node)
        full = sessions_of(backend).client("bob").boundjid.full
        mark = len(log.events)
        # The items answers of the service name no publisher; its notification says the
        # item is juliet's.
        evil.send_event(full, node, [("claimed", payload(2))], publisher="juliet@localhost")
        event = await notified(log, node, mark)
        assert isinstance(event, ItemsEvent) and event.service == evil.jid
        # Not the form a query gives: the item was fetched, and the query's form is kept.
        (item,) = event.items
        assert item["publisher"] == "" and "juliet" not in item["xml"]
        reply = await backend.pubsub.get_items("bob", evil.jid, node, {"item_ids": ["claimed"]})
        assert reply.from_cache and [i.publisher for i in reply.items] == [""]
        # Nothing is stored anywhere but under the service that sent it.
        nodes = await backend.db.nodes.list_nodes(profile="bob")
        assert {(n.service, n.name) for n in nodes} == {(evil.jid, node)}


async def test_a_notification_for_a_tracked_node_from_a_full_jid_of_its_service_is_dropped(
    tmp_path: Path, prosody_server: XmppServer
) -> None:
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [("small", payload(1))])
        await synced(backend, log, evil, node)
        full = sessions_of(backend).client("bob").boundjid.full
        account = "bob@" + evil.server.domain
        asked = len(evil.received_from(account))
        mark = len(log.events)
        # The node's own service, but from a resource of its address: any client's kind
        # of address, never the node's host (events.py).
        evil.send_event(full, node, [("forged", payload(2))], sender=f"{evil.jid}/forger")
        evil.send_event(full, node, [("honest", payload(3))])
        await notified(log, node, mark)
        heard = [raw["id"] for e in log.of(ItemsEvent) if e.node == node for raw in e.items]
        assert heard == ["honest"]
        assert sorted(await stored_ids(backend, evil.jid, node)) == ["honest", "small"]
        # Dropped unread: not even the item was asked for.
        asked_since = evil.received_from(account)[asked:]
        assert not [s for s in asked_since if "forged" in str(s)], [str(s) for s in asked_since]


# -- roster pushes from someone else -------------------------------------------------------


async def roster_push(client: BaseXMPP, to: str, intruder: str) -> str:
    """Send ``to`` a roster push adding ``intruder`` (as only its server may) and return
    how it was answered: ``result``, or the error's condition."""
    iq = client.make_iq_set(ito=to)
    query = ET.SubElement(iq.xml, f"{{{NS_ROSTER}}}query")
    ET.SubElement(query, f"{{{NS_ROSTER}}}item", jid=intruder, subscription="both", name="Pal")
    try:
        await iq.send(timeout=ARRIVAL)
    except IqError as exc:
        # Read from the XML: on a component's stream, slixmpp's error interface does not
        # find the condition (its namespace is the client's).
        for error in exc.iq.xml:
            for condition in error:
                if condition.tag.startswith(f"{{{NS_STANZAS}}}") and condition.tag != TEXT:
                    return condition.tag.rpartition("}")[2]
        return "error without a condition"
    return "result"


async def refused_and_unheard(
    backend: Backend,
    log: EventLog,
    me: str,
    pusher: BaseXMPP,
    full: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``pusher``'s roster push to ``full`` is refused, logged, and changes nothing."""
    sender = str(pusher.boundjid)
    intruder = f"intruder-{uuid.uuid4().hex[:8]}@example.org"
    before = await backend.db.roster.get_roster(me)
    mark = len(log.events)
    with caplog.at_level(logging.WARNING, logger="roost.service.xmpp.client"):
        assert await roster_push(pusher, full, intruder) == "service-unavailable"
    assert any(
        "roster push" in r.getMessage() and sender in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    # A change the server makes afterwards is announced; stanzas are handled in order, so
    # the push was dealt with by then.
    (friend,) = unique_names("friend", 1)
    friend_jid = f"{friend}@example.org"
    await backend.contacts.add(me, friend_jid, {"subscribe": False})
    await log.wait_for(
        lambda e: isinstance(e, ContactChanged) and e.contact["jid"] == friend_jid,
        f"the addition of {friend_jid}",
        after=mark,
        limit=ARRIVAL,
    )
    changed = [e.contact["jid"] for e in log.of(ContactChanged)[-10:]]
    assert intruder not in changed
    _version, entries = await backend.db.roster.get_roster(me)
    assert [e.jid for e in entries] == sorted([e.jid for e in before[1]] + [friend_jid])
    assert intruder not in [c["jid"] for c in await backend.contacts.list(me)]
    assert still_connected_as(backend, me)


def still_connected_as(backend: Backend, profile: str) -> bool:
    return sessions_of(backend).is_connected(profile)


async def test_a_roster_push_from_a_contacts_client_is_refused(
    tmp_path: Path, xmpp_server: XmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = xmpp_server
    me, pal = unique_names("pushed", 2)
    await server.register_many([me, pal])
    async with running_backend(tmp_path / "roster.db", server, [me]) as (backend, log):
        full = await backend.connect(me)
        await befriend(server, me, pal)
        async with XmppPeer(server, pal) as peer:
            await refused_and_unheard(backend, log, me, peer.client, full, caplog)


async def test_a_roster_push_from_a_service_is_refused(
    tmp_path: Path, prosody_server: ProsodyServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = prosody_server
    (me,) = unique_names("pushed", 1)
    await server.register_many([me])
    async with (
        running_backend(tmp_path / "roster.db", server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        await refused_and_unheard(backend, log, me, evil.client, full, caplog)


def is_items_request(stanza: ET.Element, node: str) -> bool:
    items = stanza.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    return stanza.get("type") == "get" and items is not None and items.get("node") == node


def fed_to_stream(backend: Backend, stanza: str) -> None:
    """Hand ``stanza`` to bob's client as if its server had sent it.

    For what no server routes: Prosody drops a stanza nested past about 70,000 elements
    (see ROUTED_DEPTH), so a deeper one is written into the client's stream here, where
    the socket's data would go."""
    sessions_of(backend).client("bob").data_received(stanza.encode())


async def test_an_item_nested_100000_deep_reaching_the_client_is_kept_raw(
    tmp_path: Path, prosody_server: XmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    depth = 100_000
    async with hostile_world(tmp_path, prosody_server) as (backend, log, evil):
        node = new_node()
        evil.put_items(node, [("small", payload(1))])
        await synced(backend, log, evil, node)
        full = sessions_of(backend).client("bob").boundjid.full
        # Only the client's stream carries the item: the service could not send it.
        text = deep(depth, "in an event")
        # A query answer: the service takes the request and leaves it, and the answer
        # comes by the stream with the request's id.
        evil.node(node).silent = True
        with stream_logged() as stream:
            mark = len(evil.received)
            reading = asyncio.ensure_future(
                backend.pubsub.get_items("bob", evil.jid, node, {"use_cache": False})
            )
            request = await evil.wait_received(
                lambda stanza: is_items_request(stanza.xml, node), "items request", mark
            )
            fed_to_stream(
                backend,
                f"<iq type='result' id='{request.xml.get('id')}' from='{evil.jid}' to='{full}'>"
                f"<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'>"
                f"<item id='small'>{payload(1)}</item><item id='deep'>{text}</item>"
                "</items></pubsub></iq>",
            )
            answer = await asyncio.wait_for(reading, ARRIVAL)
            assert [i.id for i in answer.items] == ["small", "deep"]
            assert answer.items[1].xml == query_form("deep", text)
            evil.node(node).silent = False
            # A notification of the same item.
            mark = len(log.events)
            fed_to_stream(
                backend,
                f"<message type='headline' id='deep-event' from='{evil.jid}' to='{full}'>"
                f"<event xmlns='{NS_EVENT}'><items node='{node}'>"
                f"<item id='deep'>{text}</item></items></event></message>",
            )
            event = await notified(log, node, mark)
        assert isinstance(event, ItemsEvent)
        assert [raw["xml"] for raw in event.items] == [query_form("deep", text)]
        assert await stored_xml(backend, evil.jid, node, "deep") == query_form("deep", text)
        assert stored_raw(caplog, "deep", f"{MAX_XML_DEPTH} levels")
        whole = await backend.pubsub.get_items("bob", evil.jid, node, {})
        assert whole.from_cache and whole.complete
        assert [i.id for i in whole.items] == ["small", "deep"]
        shown = "\n".join(stream.lines)
        # (The answer's items were taken out of it as it was parsed: service/xmpp/
        # item_stream.py. Its log line is the stanza without them.)
        assert f"RECV: [{{jabber:client}}message: {depth + 4} elements deep, not shown]" in shown
        assert stream.failures == [] and problems(caplog) == []
        assert still_connected(backend)
        # The session is whole: the server still answers.
        fresh = await backend.pubsub.get_items("bob", evil.jid, node, {"use_cache": False})
        assert [i.id for i in fresh.items] == ["small"]


class Signals:
    """Signals a bus client heard, as tuples of their arguments, and a bounded wait."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        self.heard.append(args)
        self._changed.set()

    async def wait_for(self, test: Callable[[tuple[Any, ...]], bool], what: str) -> tuple[Any, ...]:
        async def wait() -> tuple[Any, ...]:
            while True:
                for args in self.heard:
                    if test(args):
                        return args
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), ARRIVAL)
        except TimeoutError:
            raise AssertionError(f"no {what} within {ARRIVAL:g} s") from None


async def test_a_daemon_logging_at_debug_keeps_deep_items_raw_and_stays_up(
    roostd_launcher: RoostdLauncher, prosody_server: ProsodyServer
) -> None:
    server = prosody_server
    (me,) = unique_names("deep", 1)
    await server.register_many([me])
    account = server.jid(me)
    daemon = roostd_launcher.start()  # at debug level: slixmpp logs every stanza
    client = await RoostClient.connect(daemon.bus_address)
    states, events = Signals(), Signals()
    try:
        jid, password, options = server.credentials(me)
        await client.create_profile(me, jid, password, options)
        await client.connect_profile(me)
        await client.on_sync_state_changed(states)
        await client.on_items_event(events)
        async with HostileService(server) as evil:
            # A blog (the built-in analyser keeps it) with a post nested deep in it.
            evil.put_items(MICROBLOG, [("post", ATOM_ENTRY), ("deep", deep(ROUTED_DEPTH))])
            items, _meta = await client.get_items(me, evil.jid, MICROBLOG)
            assert [item["id"] for item in items] == ["post", "deep"]
            await states.wait_for(
                lambda args: args[1:] == (evil.jid, MICROBLOG, "completed"), "a completed blog"
            )
            items, meta = await client.get_items(me, evil.jid, MICROBLOG)
            assert meta["from_cache"] and meta["complete"]
            assert [item["id"] for item in items] == ["post", "deep"]
            assert items[1]["xml"] == query_form("deep", deep(ROUTED_DEPTH))
            # Then a notification of another.
            full = evil.pubsub_sender(account)
            evil.send_event(full, MICROBLOG, [("deeper", deep(ROUTED_DEPTH, "later"))])
            await events.wait_for(
                lambda args: args[2] == MICROBLOG and [i["id"] for i in args[4]] == ["deeper"],
                "the notification of the second deep post",
            )
            items, meta = await client.get_items(me, evil.jid, MICROBLOG)
            assert meta["from_cache"] and [i["id"] for i in items] == ["post", "deep", "deeper"]
            assert await client.is_connected(me)
    finally:
        client.close()
    assert daemon.process.poll() is None, daemon.log_text()[-2000:]
    assert daemon.terminate() == 0
    log = daemon.log_text()
    assert "elements deep, not shown]" in log
    assert log.count("stored raw") >= 2
    for failure in ("Traceback", "RecursionError", "Logging error", "ERROR"):
        assert failure not in log, failure
