"""A pubsub notification of several items floods no log: slixmpp's own pubsub event
handlers (which fail on it) are not installed on Roost's clients; Roost's router reads it."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.events import EventRouter
from roost.service.pubsub.model import PubsubItem
from roost.service.xmpp.client import SLIXMPP_PUBSUB_EVENT_HANDLERS, ConnectionOptions, RoostClient
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

EVENT = "http://jabber.org/protocol/pubsub#event"


def multi_item_event(sender: str, to: str, node: str = "n") -> str:
    # xml:lang on the message, as servers stamp it: slixmpp's handler then fails.
    return (
        f"<message xmlns='jabber:client' xml:lang='en' from='{sender}' to='{to}'>"
        f"<event xmlns='{EVENT}'><items node='{node}'>"
        "<item id='1'><x xmlns='urn:example:x'>one</x></item>"
        "<item id='2'><x xmlns='urn:example:x'>two</x></item>"
        "</items></event></message>"
    )


async def test_no_slixmpp_pubsub_event_handlers() -> None:
    client = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    for name in SLIXMPP_PUBSUB_EVENT_HANDLERS:
        assert not client.remove_handler(name), f"{name} is still registered"


async def test_multi_item_event_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    client = RoostClient("alice@example.org", "pw", ConnectionOptions(tls="none"))
    heard: list[ItemsEvent] = []

    async def fetch(_client: Any, _service: str, _node: str, ids: tuple[str, ...]) -> Any:
        return [PubsubItem(id=i, publisher="", xml=f"<item id='{i}'/>") for i in ids]

    async def sink(event: ItemsEvent) -> None:
        heard.append(event)

    EventRouter(fetch, sink).attach("alice", client)
    sent: list[Any] = []
    client.send = lambda data, use_filters=True: sent.append(data)  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG)
    client._spawn_event(ET.fromstring(multi_item_event("pubsub.example.org", "alice@example.org")))
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert [(e.node, [i["id"] for i in e.items]) for e in heard] == [("n", ["1", "2"])]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Nothing was answered to the sender (slixmpp's failing handler sent an error back).
    assert sent == []


@pytest.mark.xmpp
async def test_forged_multi_item_event_from_anyone(
    sessions: SessionManager,
    hub: EventHub,
    xmpp_server: XmppServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any account can send one: the receiving session logs no error and answers nothing."""
    alice_jid = await sessions.connect("alice")
    alice = sessions.client("alice")
    done = asyncio.Event()
    alice.add_event_handler(
        "message", lambda msg: done.set() if msg["body"] == "that was all" else None
    )
    caplog.set_level(logging.INFO)
    async with XmppPeer(xmpp_server, "bob") as bob:
        errors: list[Any] = []
        bob.client.add_event_handler("message_error", errors.append)
        bob.client.send_raw(multi_item_event(str(bob.client.boundjid.bare), alice_jid))
        bob.client.send_message(mto=alice_jid, mbody="that was all", mtype="chat")
        await asyncio.wait_for(done.wait(), 10)
        # An error reply would have reached bob before his own next message's echo; give
        # it the time of one more round trip.
        await bob.client.plugin["xep_0030"].get_info(jid=alice_jid, timeout=10)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
