"""Large notifications from a hostile service, through a real roostd on a private bus.

dbus-daemon drops a connection that sends a message over its limit, so one oversized
ItemsEvent would take roostd off the bus (bridge/item_bounds.py). A notification whose
items pass 1 MiB together comes as several signals, each within 1 MiB; an item over 1 MiB
is announced by id and size, and GetItems with ``item_ids`` gives its content, or for an
item over the 8 MiB reply bound says it is ``omitted``. The daemon's log
names items, never their payloads.

The sender is ``evil.localhost``, an external component of the test Prosody
(tests/fixtures/hostile.py); Prosody only.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from roost.bridge.client import RoostClient
from roost.bridge.item_bounds import MAX_ITEM_BYTES, MAX_SIGNAL_ITEMS_BYTES, record_bytes
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.hostile import HostileService
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

NODE = "urn:example:large"
ARRIVAL = 60.0
KIB = 1024
MIB = 1024 * KIB


def payload(marker: str, size: int) -> str:
    """A payload of about ``size`` bytes, its text starting and ending with ``marker``."""
    filler = "lorem ipsum " * (size // 12)
    return f"<blob xmlns='urn:example:large'>{marker} {filler}{marker}</blob>"


class Signals:
    """The ItemsEvent signals of one node, and a bounded wait for one naming an item."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.events: list[list[dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def __call__(self, _profile: str, _service: str, node: str, kind: str, items: Any) -> None:
        if node == self.node and kind == "items":
            self.events.append(list(items))
            self._changed.set()

    async def naming(self, item_id: str) -> list[dict[str, Any]]:
        async def wait() -> list[dict[str, Any]]:
            while True:
                for items in self.events:
                    if any(item["id"] == item_id for item in items):
                        return items
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), ARRIVAL)
        except TimeoutError:
            raise AssertionError(f"no ItemsEvent naming {item_id} within {ARRIVAL:g} s") from None


async def test_large_notifications_are_announced_by_ids_and_read_with_get_items(
    roostd_launcher: RoostdLauncher, prosody_server: ProsodyServer
) -> None:
    server = prosody_server
    (me,) = unique_names("large", 1)
    await server.register_many([me])
    account = server.jid(me)
    # At info, the level a daemon runs at; slixmpp's stream log at debug holds every
    # stanza, payloads included (docs/security.md).
    daemon = roostd_launcher.start("--log-level", "info")
    client = await RoostClient.connect(daemon.bus_address)
    markers: list[str] = []

    def marked(size: int) -> str:
        markers.append(f"payload-{uuid.uuid4().hex}")
        return payload(markers[-1], size)

    try:
        jid, password, options = server.credentials(me)
        await client.create_profile(me, jid, password, options)
        await client.connect_profile(me)
        signals = Signals(NODE)
        await client.on_items_event(signals)
        async with HostileService(server) as evil:
            evil.put_items(NODE, [])
            await client.subscribe_node(me, evil.jid, NODE)
            # The account's full JID, from its subscription request.
            full = evil.pubsub_sender(account)

            many = [(f"many-{n}", marked(40 * KIB)) for n in range(40)]
            assert sum(len(p) for _i, p in many) > MAX_SIGNAL_ITEMS_BYTES
            evil.send_event(full, NODE, many)
            # Signals arrive in order: the last item's is the last of the notification.
            await signals.naming(many[-1][0])
            batches = [b for b in signals.events if b and b[0]["id"].startswith("many-")]
            assert len(batches) >= 2, [len(b) for b in batches]
            assert [item["id"] for b in batches for item in b] == [i for i, _p in many]
            for batch in batches:
                assert sum(map(record_bytes, batch)) <= MAX_SIGNAL_ITEMS_BYTES
                assert all(not item.get("omitted") and "xml" in item for item in batch)
            big = ("big", marked(4 * MIB))
            huge = ("huge", marked(MAX_ITEM_BYTES + MIB))
            for items in ([big], [huge]):
                evil.send_event(full, NODE, items)
                announced = await signals.naming(items[0][0])
                assert [item["id"] for item in announced] == [i for i, _p in items]
                for item, (_item_id, sent) in zip(announced, items, strict=True):
                    assert item["omitted"] is True, item
                    assert "xml" not in item and "parsed" not in item, sorted(item)
                    assert item["size"] > len(sent), item
            # Still on the bus: a later call answers.
            assert await client.is_connected(me)

            wanted = [many[0], many[-1], big]
            records, _meta = await client.get_items(
                me, evil.jid, NODE, item_ids=[i for i, _p in wanted], use_cache=False
            )
            assert [r["id"] for r in records] == [i for i, _p in wanted]
            for record, (_item_id, sent) in zip(records, wanted, strict=True):
                assert not record.get("omitted"), sorted(record)
                marker = sent.split(">", 1)[1].split(" ", 1)[0]
                assert record["xml"].count(marker) == 2
                assert len(record["xml"]) > len(sent)
            (record,), _meta = await client.get_items(
                me, evil.jid, NODE, item_ids=["huge"], use_cache=False
            )
            assert record["id"] == "huge" and record["omitted"] is True, sorted(record)
            assert "xml" not in record and record["size"] > MAX_ITEM_BYTES
            assert await client.is_connected(me)
    finally:
        client.close()
    assert daemon.process.poll() is None, daemon.log_text()[-2000:]
    assert daemon.terminate() == 0
    log = daemon.log_text()
    leaked = [marker for marker in markers if marker in log]
    assert leaked == [], leaked
    assert "lorem ipsum" not in log
