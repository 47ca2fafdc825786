"""Sessions against real servers: connect, fail clearly, come back after a loss."""

from __future__ import annotations

import asyncio

import pytest

from roost.service.errors import ConnectionFailed, NotConnected
from roost.service.events import EventHub, ProfileConnected, ProfileDisconnected
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.sessions import Recorder, make_lookup
from tests.fixtures.xmpp import XmppServer, free_port

pytestmark = pytest.mark.xmpp


async def test_connect_two_profiles(
    sessions: SessionManager, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    alice = await sessions.connect("alice")
    bob = await sessions.connect("bob")
    assert alice.startswith(xmpp_server.jid("alice") + "/")
    assert bob.startswith(xmpp_server.jid("bob") + "/")
    assert sessions.is_connected("alice") and sessions.is_connected("bob")
    assert [e.jid for e in recorder.of(ProfileConnected)] == [alice, bob]
    assert await sessions.connect("alice") == alice
    again = await asyncio.gather(sessions.connect("bob"), sessions.connect("bob"))
    assert again == [bob, bob]
    await sessions.disconnect("alice")
    assert not sessions.is_connected("alice")
    assert recorder.of(ProfileDisconnected)[-1].profile == "alice"
    with pytest.raises(NotConnected):
        sessions.client("alice")


async def test_wrong_password(xmpp_server: XmppServer, hub: EventHub) -> None:
    manager = SessionManager(make_lookup(xmpp_server, {"bob": {"password": "nope"}}), hub)
    with pytest.raises(ConnectionFailed, match="refused the JID or password"):
        await manager.connect("bob")
    assert not manager.is_connected("bob")


async def test_server_down(xmpp_server: XmppServer, hub: EventHub) -> None:
    manager = SessionManager(make_lookup(xmpp_server, {"bob": {"port": free_port()}}), hub)
    with pytest.raises(ConnectionFailed, match="unreachable"):
        await manager.connect("bob")


@pytest.mark.parametrize("mode", ["starttls", "required"])
async def test_tls_required_but_unavailable(
    xmpp_server: XmppServer, hub: EventHub, mode: str
) -> None:
    manager = SessionManager(
        make_lookup(xmpp_server, {"bob": {"tls": mode}}), hub, connect_timeout=10
    )
    with pytest.raises(ConnectionFailed, match="TLS is required"):
        await manager.connect("bob")


async def test_reconnects_after_server_restart(
    sessions: SessionManager, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    await sessions.connect("carol")
    try:
        await xmpp_server.stop_async()
        # While shutting down, a server may still accept a session for a moment: what
        # matters is the state once it is gone.
        for _ in range(200):
            if not sessions.is_connected("carol"):
                break
            await asyncio.sleep(0.05)
        assert not sessions.is_connected("carol")
        assert recorder.of(ProfileDisconnected)[0].profile == "carol"
        seen = len(recorder.events)
    finally:
        await xmpp_server.start_async()
    for _ in range(600):
        if sessions.is_connected("carol"):
            break
        await asyncio.sleep(0.05)
    assert sessions.is_connected("carol")
    back = [e for e in recorder.events[seen:] if isinstance(e, ProfileConnected)]
    assert back and back[-1].jid.startswith(xmpp_server.jid("carol") + "/")
    await sessions.disconnect("carol")
    assert not sessions.is_connected("carol")


async def test_notify_features_advertised(sessions: SessionManager) -> None:
    alice_jid = await sessions.connect("alice")
    await sessions.connect("bob")
    alice = sessions.client("alice")
    assert "urn:xmpp:microblog:0" in alice.notify_namespaces
    alice.add_notify("urn:example:roost:notes")
    info = await sessions.client("bob").plugin["xep_0030"].get_info(jid=alice_jid)
    features = info["disco_info"]["features"]
    assert "urn:xmpp:microblog:0+notify" in features
    assert "urn:example:roost:notes+notify" in features


async def test_disconnect_stops_retries(
    sessions: SessionManager, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    await sessions.connect("carol")
    try:
        await xmpp_server.stop_async()
        for _ in range(200):
            if not sessions.is_connected("carol"):
                break
            await asyncio.sleep(0.05)
        await sessions.disconnect("carol")
        assert not sessions.is_connected("carol")
        assert sessions.connected_profiles() == []
    finally:
        await xmpp_server.start_async()
    # Back on request only: a fresh connect works and is the one new Connected.
    seen = len(recorder.of(ProfileConnected))
    await sessions.connect("carol")
    assert len(recorder.of(ProfileConnected)) == seen + 1
