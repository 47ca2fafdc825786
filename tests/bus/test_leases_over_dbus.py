"""Several roostd daemons on one database, each on a bus of its own, each serving its own
profiles under a lease (issue 12's acceptance): both serve and sync; a third asking for
a leased profile is refused with ``Error.Conflict`` naming the holder, and takes the
profile once the holder has stopped.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import Variant

from roost.bridge.client import ConflictError, RoostClient
from roost.bridge.constants import ERROR_PREFIX
from tests.fixtures.dbus import PrivateBus, Roostd, RoostdLauncher, start_bus, stop_bus
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

MICROBLOG = "urn:xmpp:microblog:0"
ATOM = "http://www.w3.org/2005/Atom"
ITEMS = 20
# A sync of a few items takes well under a second on an idle machine; this holds on a
# loaded two-core one.
SYNC_TIMEOUT = 90.0


def entry(n: int) -> str:
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{n}</id><title>Post {n}</title>"
        f"<content type='text'>Body {n}</content>"
        f"<published>2026-01-01T00:00:00Z</published></entry>"
    )


class Daemons:
    """Daemons on one database, each on a private bus of its own; all stopped at the end."""

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self.database_url = database_url
        self.buses: list[PrivateBus] = []
        self.launchers: list[RoostdLauncher] = []

    def start(self) -> Roostd:
        """A new daemon on a new bus."""
        n = len(self.buses)
        bus = start_bus(self.directory / f"bus{n}")
        self.buses.append(bus)
        launcher = RoostdLauncher(self.directory / f"daemon{n}", bus.address)
        (self.directory / f"daemon{n}").mkdir()
        self.launchers.append(launcher)
        # The last --database wins: the launcher names a file of the daemon's own first.
        return launcher.start("--database", self.database_url, "--log-level", "info")

    def stop_all(self) -> None:
        """Stop every daemon, then every bus."""
        for launcher in self.launchers:
            launcher.stop_all()
        for bus in self.buses:
            stop_bus(bus)


@pytest.fixture
def shared_postgresql(tmp_path: Path, postgresql_url: str) -> Iterator[Daemons]:
    daemons = Daemons(tmp_path, postgresql_url)
    yield daemons
    daemons.stop_all()


@pytest.fixture
def shared_sqlite(tmp_path: Path, sqlite_url: str) -> Iterator[Daemons]:
    daemons = Daemons(tmp_path, sqlite_url)
    yield daemons
    daemons.stop_all()


async def serve(daemon: Roostd, server: XmppServer, name: str) -> RoostClient:
    """A client of ``daemon`` that created the profile ``name`` there and connected it."""
    client = await RoostClient.connect(daemon.bus_address)
    jid, password, options = server.credentials(name)
    await client.create_profile(name, jid, password, options)
    await client.connect_profile(name)
    return client


async def filled_blog(client: RoostClient, server: XmppServer, profile: str) -> str:
    """A microblog comments node of ``profile``'s, made and filled through the daemon;
    its name."""
    service = server.pubsub_service
    node = f"{MICROBLOG}:comments/{profile}"
    await client.create_node(profile, service, node, {"pubsub#max_items": "max"})
    for n in range(ITEMS):
        await client.publish(profile, service, node, f"i{n:03d}", entry(n))
    return node


async def synced(client: RoostClient, server: XmppServer, profile: str, node: str) -> None:
    """Read ``node`` once through the daemon, and wait until its cache has synchronised
    it."""
    service = server.pubsub_service
    completed = asyncio.Event()

    def on_state(p: str, _service: str, changed: str, state: str) -> None:
        if (p, changed, state) == (profile, node, "completed"):
            completed.set()

    await client.on_sync_state_changed(on_state)
    state = await client.get_node_state(profile, service, node)
    if state["state"] != "completed":
        _items, meta = await client.get_items(profile, service, node)
        assert not meta["from_cache"]
        await asyncio.wait_for(completed.wait(), SYNC_TIMEOUT)
    state = await client.get_node_state(profile, service, node)
    assert state["state"] == "completed" and state["item_count"] == ITEMS


def holder(daemon: Roostd) -> str:
    return f"roostd pid {daemon.process.pid} on {socket.gethostname()}"


# ejabberd lets any local account create nodes on its pubsub service (the test Prosody
# lets only its admin).
async def test_two_daemons_serve_their_own_profiles_and_a_third_is_refused(
    shared_postgresql: Daemons, ejabberd_server: XmppServer
) -> None:
    server = ejabberd_server
    first_name, second_name = unique_names("lease", 2)
    await server.register_many([first_name, second_name])
    first = shared_postgresql.start()
    second = shared_postgresql.start()
    one = await serve(first, server, first_name)
    two = await serve(second, server, second_name)
    third_client: RoostClient | None = None
    try:
        # Both serve values and sync a node, side by side.
        await one.set_value(first_name, "ui", "theme", Variant("s", "dark"))
        await two.set_value(second_name, "ui", "theme", Variant("s", "light"))
        # One after the other: ejabberd may fail two node creations at once ("Database
        # failure").
        nodes = [
            await filled_blog(one, server, first_name),
            await filled_blog(two, server, second_name),
        ]
        await asyncio.gather(
            synced(one, server, first_name, nodes[0]), synced(two, server, second_name, nodes[1])
        )
        assert (await one.get_values(first_name, "ui"))["theme"].value == "dark"
        assert (await two.get_values(second_name, "ui"))["theme"].value == "light"
        items, meta = await one.get_items(first_name, server.pubsub_service, nodes[0])
        assert meta["from_cache"] and len(items) == ITEMS
        # Each sees the other's profile listed, and cannot act for it.
        assert await one.list_profiles() == sorted([first_name, second_name])
        with pytest.raises(ConflictError):
            await one.get_values(second_name, "ui")

        third = shared_postgresql.start()
        third_client = await RoostClient.connect(third.bus_address)
        for refused in (
            third_client.connect_profile(first_name),
            third_client.get_values(first_name, "ui"),
        ):
            with pytest.raises(ConflictError) as conflict:
                await refused
            assert conflict.value.name == ERROR_PREFIX + "Conflict"
            assert f"profile {first_name!r} is served by another Roost daemon" in str(
                conflict.value
            )
            assert holder(first) in conflict.value.message
        assert not await third_client.is_connected(first_name)

        # Once the holder has stopped, the profile is the third's to serve.
        assert first.terminate() == 0
        await third_client.connect_profile(first_name)
        assert (await third_client.get_values(first_name, "ui"))["theme"].value == "dark"
        assert await third_client.is_connected(first_name)
        # The second daemon went on serving throughout.
        assert (await two.get_values(second_name, "ui"))["theme"].value == "light"
        items, meta = await two.get_items(second_name, server.pubsub_service, nodes[1])
        assert meta["from_cache"] and len(items) == ITEMS
    finally:
        for client in (one, two, third_client):
            if client is not None:
                client.close()


async def test_two_daemons_on_one_sqlite_file_refuse_each_others_profiles(
    shared_sqlite: Daemons,
) -> None:
    first = shared_sqlite.start()
    one = await RoostClient.connect(first.bus_address)
    other: RoostClient | None = None
    try:
        await one.create_profile("alice", "alice@example.org", "pw", {})
        await one.set_value("alice", "ui", "theme", Variant("s", "dark"))
        second = shared_sqlite.start()
        other = await RoostClient.connect(second.bus_address)
        assert await other.list_profiles() == ["alice"]
        for refused in (other.connect_profile("alice"), other.get_values("alice", "ui")):
            with pytest.raises(ConflictError) as conflict:
                await refused
            assert holder(first) in conflict.value.message
        assert first.terminate() == 0
        assert (await other.get_values("alice", "ui"))["theme"].value == "dark"
    finally:
        one.close()
        if other is not None:
            other.close()
