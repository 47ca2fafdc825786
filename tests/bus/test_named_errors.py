"""Every named error roostd answers, raised over a real bus, each with a message a person
can act on; and the calls and signals no other test drove over the bus.

The errors (``org.roost.Backend1.Error.``): ``InvalidArgument``, ``NotFound``,
``NotConnected``, ``Conflict``, ``Forbidden``, ``Internal`` (a stored value damaged in
the database file) and ``Xmpp.<Condition>`` (``Xmpp.Conflict``, ``Xmpp.ItemNotFound``,
``Xmpp.RemoteServerTimeout`` from a service that never answers). Each is asserted by
name, with a message that says what to do (a hint word of the case's own), no
traceback. Beside them: ``Connected`` and ``Disconnected`` signals, a profile with
``autoconnect`` connecting when roostd starts, ``Unsubscribe`` and ``Cache.Reset``.
docs/reliability.md ("Named errors") lists which test raises which error.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from roost.bridge.client import RoostClient, RoostDBusError
from roost.bridge.constants import ERROR_PREFIX
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.hostile import HostileService
from tests.fixtures.xmpp import ProsodyServer, XmppServer

pytestmark = [pytest.mark.dbus]

WAIT = 60.0
# Seconds a request to the server may go unanswered, for the daemon facing a silent one.
REQUEST_TIMEOUT = 2


async def refused(call: Awaitable[Any], name: str, *hints: str) -> str:
    """The message of the error ``call`` answers, asserted to be ``name`` and to say what
    to do (every one of ``hints``, in any case), with no traceback."""
    try:
        await call
    except RoostDBusError as err:
        assert err.name == ERROR_PREFIX + name, f"{err.name}: {err.message}"
        message = err.message
    else:
        raise AssertionError(f"the call answered, not {name}")
    assert message and "Traceback" not in message and 'File "' not in message, message
    for hint in hints:
        assert hint.lower() in message.lower(), f"{name}: {message!r} does not say {hint!r}"
    return message


class Signals:
    """Connected and Disconnected signals, and a bounded wait for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self._changed = asyncio.Event()

    def record(self, kind: str) -> Any:
        def relay(name: str, detail: str) -> None:
            self.seen.append((kind, name, detail))
            self._changed.set()

        return relay

    async def attach(self, client: RoostClient) -> None:
        await client.on_connected(self.record("Connected"))
        await client.on_disconnected(self.record("Disconnected"))

    async def wait(self, kind: str, name: str) -> str:
        async def first() -> str:
            while True:
                for seen_kind, seen_name, detail in self.seen:
                    if (seen_kind, seen_name) == (kind, name):
                        return detail
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(first(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no {kind} for {name} within {WAIT:g} s: {self.seen}") from None


async def test_local_errors_over_the_bus(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    try:
        await refused(
            client.get_items("", "", "urn:example:node", colour="red"),
            "InvalidArgument",
            "known:",
        )
        await refused(client.get_param("@global@", "ui", "theme"), "NotFound", "SetParam")
        await refused(client.is_connected("ghost"), "NotFound", "List()")
        await client.create_profile("me", "me@example.org", "secret", {})
        await refused(
            client.create_profile("me", "me@example.org", "secret", {}),
            "Conflict",
            "choose another name",
        )
        await refused(
            client.set_param("@global@", "@roost", "default", "me"),
            "Forbidden",
            "without a leading '@'",
        )
        await refused(
            client.get_items("me", "pubsub.example.org", "urn:example:node"),
            "NotConnected",
            "connect the profile",
        )

        await client.set_value("@global@", "app", "window", Variant("(ii)", [800, 600]))
    finally:
        client.close()
    assert daemon.terminate() == 0
    damage(daemon.database, "app", "window")

    # Started again, the namespace is read from the damaged file.
    again = roostd_launcher.start(database=daemon.database)
    client = await RoostClient.connect(again.bus_address)
    try:
        await refused(client.get_values("@global@", "app", []), "Internal", "window", "DeleteValue")
        await client.delete_value("@global@", "app", "window")
        assert await client.get_values("@global@", "app", []) == {}
    finally:
        client.close()
    assert again.terminate() == 0


def damage(database: Path, namespace: str, key: str) -> None:
    """Make a stored value no longer match its type, as a damaged file would."""
    with sqlite3.connect(database) as db:
        changed = db.execute(
            "UPDATE kv_store SET value = ? WHERE namespace = ? AND key = ?",
            ('"not a struct"', namespace, key),
        ).rowcount
    assert changed == 1


async def wait_completed(client: RoostClient, service: str, node: str) -> None:
    """Until the node's sync has completed (its SyncStateChanged, or its state already)."""
    done = asyncio.Event()

    def changed(_profile: str, svc: str, name: str, state: str) -> None:
        if (svc, name, state) == (service, node, "completed"):
            done.set()

    stop = await client.on_sync_state_changed(changed)
    try:
        if (await client.get_node_state("alice", service, node))["state"] != "completed":
            await asyncio.wait_for(done.wait(), WAIT)
    finally:
        stop()


@pytest.mark.xmpp
async def test_server_errors_signals_unsubscribe_and_reset(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer
) -> None:
    service = xmpp_server.pubsub_service
    # A comments node (the built-in microblog analyser caches it), made by alice, whom
    # the servers' pubsub services allow to create nodes.
    node = f"urn:xmpp:microblog:0:comments/{uuid.uuid4().hex[:8]}"
    signals = Signals()
    client = await RoostClient.connect(roostd_launcher.bus_address)
    # Listening before the daemon starts: the autoconnect's Connected cannot be missed.
    await signals.attach(client)
    daemon = roostd_launcher.start()
    jid, password, options = xmpp_server.credentials("alice")
    await client.create_profile("alice", jid, password, {**options, "autoconnect": True})
    await client.connect_profile("alice")
    full = await signals.wait("Connected", "alice")
    assert full.startswith(jid + "/"), full

    assert await client.create_node("alice", service, node, {}) == node
    await refused(client.create_node("alice", service, node, {}), "Xmpp.Conflict", "exists")
    await refused(
        client.get_items("alice", service, node + "-none", use_cache=False),
        "Xmpp.ItemNotFound",
        "check the service, node",
    )

    await client.subscribe_node("alice", service, node)
    listed = await client.get_subscriptions("alice", service, node)
    assert [s["subscription"] for s in listed] == ["subscribed"], listed
    await client.unsubscribe_node("alice", service, node)
    assert await client.get_subscriptions("alice", service, node) == []

    entry = (
        "<entry xmlns='http://www.w3.org/2005/Atom'><id>urn:uuid:e1</id><title>One</title>"
        "<published>2026-01-01T00:00:00Z</published></entry>"
    )
    await client.publish("alice", service, node, "e1", entry)
    await client.get_items("alice", service, node)
    await client.sync_node("alice", service, node)
    await wait_completed(client, service, node)
    assert [hit["id"] for hit in await client.search(nodes=[node])] == ["e1"]
    await client.reset_cache()
    state = await client.get_node_state("alice", service, node)
    assert state["state"] == "none" and state["item_count"] == 0, state
    assert await client.search(nodes=[node]) == []

    await client.disconnect_profile("alice")
    assert await signals.wait("Disconnected", "alice")
    assert not await client.is_connected("alice")
    assert daemon.terminate() == 0

    # Started again, the profile connects by itself: a Connected signal, no call.
    signals.seen.clear()
    again = roostd_launcher.start(database=daemon.database)
    try:
        await signals.wait("Connected", "alice")
        assert await client.is_connected("alice")
        await client.delete_node("alice", service, node)
    finally:
        client.close()
    assert again.terminate() == 0


@pytest.mark.xmpp
async def test_a_service_that_never_answers_is_a_remote_server_timeout(
    roostd_launcher: RoostdLauncher, prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    config = tmp_path / "roost.toml"
    config.write_text(f"[xmpp]\nrequest_timeout = {REQUEST_TIMEOUT}\n")
    daemon = roostd_launcher.start("--config", str(config))
    client = await RoostClient.connect(daemon.bus_address)
    try:
        jid, password, options = prosody_server.credentials("bob")
        await client.create_profile("bob", jid, password, options)
        await client.connect_profile("bob")
        async with HostileService(prosody_server) as evil:
            evil.put_items("urn:example:silent", [("1", "<x xmlns='urn:example'/>")])
            evil.node("urn:example:silent").silent = True
            message = await refused(
                client.get_items("bob", evil.jid, "urn:example:silent", use_cache=False),
                "Xmpp.RemoteServerTimeout",
                f"within {REQUEST_TIMEOUT} s",
                "try again later",
                "request_timeout",
            )
            assert evil.jid in message
            # The session survives: the next call is answered.
            evil.node("urn:example:silent").silent = False
            items, _meta = await client.get_items(
                "bob", evil.jid, "urn:example:silent", use_cache=False
            )
            assert [i["id"] for i in items] == ["1"]
    finally:
        client.close()
    assert daemon.terminate() == 0
