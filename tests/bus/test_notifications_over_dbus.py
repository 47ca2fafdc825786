"""A notification without payloads (a node with ``pubsub#deliver_payloads`` off names the
items only), through a real roostd on a private bus: ItemsEvent carries the items,
fetched from the service, as a query gives them.

The sender is ``evil.localhost``, the test Prosody's external component
(tests/fixtures/hostile.py); Prosody only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.bridge.client import RoostClient
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.hostile import NS_PUBSUB, HostileService
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

NODE = "urn:example:bare"
ARRIVAL = 30.0


def payload(n: int) -> str:
    return f"<note xmlns='urn:example:bare'>note {n}</note>"


async def test_a_notification_without_payloads_reaches_items_event_with_the_items(
    roostd_launcher: RoostdLauncher, prosody_server: ProsodyServer
) -> None:
    server = prosody_server
    (me,) = unique_names("bare", 1)
    await server.register_many([me])
    account = server.jid(me)
    daemon = roostd_launcher.start("--log-level", "info")
    client = await RoostClient.connect(daemon.bus_address)
    heard: asyncio.Queue[tuple[str, str, list[dict[str, Any]]]] = asyncio.Queue()
    try:
        jid, password, options = server.credentials(me)
        await client.create_profile(me, jid, password, options)
        await client.connect_profile(me)
        await client.on_items_event(
            lambda _p, service, node, kind, items: heard.put_nowait((node, kind, items))
        )
        async with HostileService(server) as evil:
            evil.put_items(NODE, [])
            await client.subscribe_node(me, evil.jid, NODE)
            full = evil.pubsub_sender(account)
            evil.send_event(full, NODE, [("n1", payload(1)), ("n2", payload(2))], payloads=False)
            node, kind, items = await asyncio.wait_for(heard.get(), ARRIVAL)
            assert (node, kind) == (NODE, "items")
            assert [item["id"] for item in items] == ["n1", "n2"]
            # Fetched: the payloads the notification left out, in the query's form.
            for n, item in enumerate(items, start=1):
                assert item["xml"].startswith(f'<item xmlns="{NS_PUBSUB}" id="n{n}">')
                assert f"note {n}</note></item>" in item["xml"]
            # Roost asked the service for exactly those items.
            assert "ids 2" in evil.node(NODE).asked, evil.node(NODE).asked
    finally:
        client.close()
    assert daemon.terminate() == 0
