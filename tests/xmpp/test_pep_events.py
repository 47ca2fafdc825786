"""PEP notifications reach a contact that advertises +notify for the node."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

MICROBLOG = "urn:xmpp:microblog:0"
# How long a published item may take to reach the contact as an event.
EVENT_TIMEOUT = 15.0


async def test_pep_event_for_contact(
    sessions: SessionManager, hub: EventHub, recorder: Recorder, xmpp_server: XmppServer
) -> None:
    pubsub = PubsubService(sessions, hub)
    await sessions.connect("alice")
    await sessions.connect("bob")
    alice, bob = sessions.client("alice"), sessions.client("bob")
    # Mutual presence subscription: Roost's client approves nothing by itself, so each
    # side approves the other's request as a person would.
    alice.add_event_handler(
        "roster_subscription_request",
        lambda p: alice.send_presence(pto=p["from"].bare, ptype="subscribed"),
    )
    bob.add_event_handler(
        "roster_subscription_request",
        lambda p: bob.send_presence(pto=p["from"].bare, ptype="subscribed"),
    )
    alice.send_presence_subscription(pto=xmpp_server.jid("bob"))
    bob.send_presence_subscription(pto=xmpp_server.jid("alice"))
    for _ in range(100):
        if (
            alice.client_roster[xmpp_server.jid("bob")]["to"]
            and bob.client_roster[xmpp_server.jid("alice")]["to"]
        ):
            break
        await asyncio.sleep(0.05)
    bob.send_presence()
    # The server sends alice's events to bob once it has bob's presence with its +notify
    # capabilities (and has asked bob's client what they mean): wait for that, then
    # publish once. A lost first event fails the test.
    assert await bob.notify_known(MICROBLOG), "the server never took in bob's +notify"
    found: list[ItemsEvent] = []
    arrived = asyncio.Event()

    def on_event(event: object) -> None:
        if (
            isinstance(event, ItemsEvent)
            and event.profile == "bob"
            and event.node == MICROBLOG
            and event.kind == "items"
            # Servers also send the node's last item at a new presence: other tests'.
            and [i["id"] for i in event.items] == ["pep-event"]
        ):
            found.append(event)
            arrived.set()

    hub.subscribe(on_event)
    entry = "<entry xmlns='http://www.w3.org/2005/Atom'><title>For contacts</title></entry>"
    # The same publish options as the other microblog tests: the node is shared.
    await pubsub.publish(
        "alice", "", MICROBLOG, "pep-event", entry, {"pubsub#access_model": "open"}
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(arrived.wait(), EVENT_TIMEOUT)
    assert found, "no PEP event reached bob"
    assert found[-1].service == xmpp_server.jid("alice")
    assert [i["id"] for i in found[-1].items] == ["pep-event"]
    assert "<title>For contacts</title>" in found[-1].items[0]["xml"]
