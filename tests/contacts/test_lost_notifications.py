"""A notification that names items without their payload, which then cannot be read.

A node configured not to deliver payloads notifies item ids only; Roost fetches the
items to complete the notification. When that fetch fails (the reader lost access, a
timeout), the cached copy would miss the items: the node must stop answering from the
cache and be resynchronised, never served without them as if current. The frontends
still hear the notification.

The server is ``evil.localhost``, the test Prosody's in-memory pubsub component.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.service.config import Config
from roost.service.events import ItemsEvent, SyncStateChanged
from tests.contacts.test_hostile_servers import sync_to_end
from tests.contacts.test_strangers import ARRIVAL, entry
from tests.fixtures.backend import running_backend
from tests.fixtures.hostile import HostileService
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = pytest.mark.xmpp

NODE = "urn:example:ids-only"


async def test_a_notification_that_cannot_be_completed_makes_the_node_resync(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    server = prosody_server
    (me,) = unique_names("lost", 1)
    await server.register_many([me])
    async with (
        running_backend(tmp_path / "roost.sqlite", server, [me], Config()) as (backend, log),
        HostileService(server) as evil,
    ):
        await backend.connect(me)
        evil.put_items(NODE, [(f"old-{n}", entry("old", n)) for n in range(3)])
        await backend.pubsub.subscribe(me, evil.jid, NODE, {})
        assert await sync_to_end(backend, log, me, evil.jid, NODE) == "completed"
        state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
        assert state["current"] and state["item_count"] == 3, state

        # A new item is announced by id only, and the reader may no longer fetch it.
        evil.node(NODE).unreadable.add("new-0")
        seen = len(log.events)
        evil.send_event(f"{me}@{server.domain}", NODE, [("new-0", entry("new", 0))], payloads=False)
        heard = await log.wait_for(
            lambda e: isinstance(e, ItemsEvent) and e.node == NODE,
            "the notification, handed on as it came",
            after=seen,
            limit=ARRIVAL,
        )
        assert isinstance(heard, ItemsEvent)
        assert not heard.complete and [i["id"] for i in heard.items] == ["new-0"]
        # The node left the served set: its resync reads the new item by id too, which
        # is refused, so the node ends in error, and reads go to the server.
        failed = await log.wait_for(
            lambda e: (
                isinstance(e, SyncStateChanged)
                and e.node == NODE
                and e.state in ("error", "completed")
            ),
            "the resync after the lost notification",
            after=seen,
            limit=ARRIVAL,
        )
        assert isinstance(failed, SyncStateChanged) and failed.state == "error"
        state = await backend.pubsub.get_node_state(me, evil.jid, NODE)
        assert not state["current"] and "forbidden" in state["reason"], state
        reply = await backend.pubsub.get_items(me, evil.jid, NODE, {})
        assert not reply.from_cache
        assert [i.id for i in reply.items] == ["old-0", "old-1", "old-2", "new-0"]

        # Readable again: the retry completes the copy, which then answers with the item.
        evil.node(NODE).unreadable.clear()
        retried = len(log.events)
        await log.wait_for(
            lambda e: isinstance(e, SyncStateChanged) and e.node == NODE and e.state == "completed",
            "the retried sync",
            after=retried,
            limit=ARRIVAL,
        )
        cached = await backend.pubsub.get_items(me, evil.jid, NODE, {})
        assert cached.from_cache
        assert [i.id for i in cached.items] == [i.id for i in reply.items]
        assert [i.xml for i in cached.items] == [i.xml for i in reply.items]
