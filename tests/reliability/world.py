"""The world the bus fuzz runs in: nodes another client made and filled, and a roostd with
a connected profile that has synchronised one of them.

Built on Prosody, whose test configuration has no server-to-server module: a call naming
another domain is answered by the server at once, never sent anywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from roost.bridge.client import RoostClient
from tests.fixtures.dbus import Roostd, RoostdLauncher
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer
from tests.reliability.fuzz import FuzzWorld

ATOM = "http://www.w3.org/2005/Atom"
COMMENTS = "urn:xmpp:microblog:0:comments/"
SYNC_WAIT = 90.0


def comment(n: int) -> str:
    """A small XEP-0277 comment, which the built-in analyser parses."""
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:fuzz-{n}</id><title>Comment {n}</title>"
        f"<content type='text'>Body of comment {n} \u00e9t\u00e9</content>"
        "<published>2026-01-01T00:00:00Z</published></entry>"
    )


async def make_nodes(server: XmppServer, items: int) -> tuple[str, str, list[str]]:
    """A comments node of ``items`` items and a plain node, made by another account."""
    synced = f"{COMMENTS}{uuid.uuid4().hex[:12]}"
    plain = f"fuzz-plain-{uuid.uuid4().hex[:12]}"
    ids = [f"c{n:04d}" for n in range(items)]
    async with XmppPeer(server, "alice") as peer:
        for node in (synced, plain):
            await peer.create_node(node, {"pubsub#max_items": "max"}, service=server.pubsub_service)
        await peer.publish_many(
            synced, [(i, comment(n)) for n, i in enumerate(ids)], service=server.pubsub_service
        )
        await peer.publish_many(
            plain,
            [(f"p{n}", f"<note xmlns='urn:example:fuzz'>{n}</note>") for n in range(3)],
            service=server.pubsub_service,
        )
    return synced, plain, ids


async def synchronise(client: RoostClient, profile: str, service: str, node: str) -> None:
    """Meet ``node`` as a frontend does and wait for its sync to complete."""
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def changed(_profile: str, _service: str, changed_node: str, state: str) -> None:
        if changed_node == node and state in ("completed", "error", "no_sync") and not done.done():
            done.set_result(state)

    stop = await client.on_sync_state_changed(changed)
    try:
        await client.call(
            "org.roost.Backend1.Pubsub", "GetItems", "sssa{sv}", [profile, service, node, {}]
        )
        state = await asyncio.wait_for(done, SYNC_WAIT)
    finally:
        stop()
    assert state == "completed", await client.get_node_state(profile, service, node)


async def build_world(
    server: XmppServer, launcher: RoostdLauncher, items: int = 30
) -> tuple[Roostd, RoostClient, FuzzWorld]:
    """A roostd on ``launcher``'s bus, a fresh account connected in it, a node of ``items``
    comments synchronised, and a profile never connected."""
    (user,) = unique_names("fuzz", 1)
    await server.register_many([user])
    synced, plain, ids = await make_nodes(server, items)
    daemon = launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    jid, password, options = server.credentials(user)
    await client.create_profile("fuzz", jid, password, options)
    await client.create_profile(
        "idle", f"idle@{server.domain}", "x", {"host": "127.0.0.1", "port": 1}
    )
    await client.connect_profile("fuzz")
    await synchronise(client, "fuzz", server.pubsub_service, synced)
    world = FuzzWorld(
        profile="fuzz",
        jid=jid,
        idle_profile="idle",
        service=server.pubsub_service,
        domain=server.domain,
        synced_node=synced,
        plain_node=plain,
        item_ids=tuple(ids),
        database=Path(daemon.database),
        pid=daemon.process.pid,
    )
    return daemon, client, world
