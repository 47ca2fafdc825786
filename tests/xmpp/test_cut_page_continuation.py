"""Going on from a page Roost cut to the reply bound asks ejabberd for the next page only.

A server answer that passes the reply bound is cut by Roost, whose token at the cut has
no server token (ejabberd's tokens are the items' timestamps, known only for a page's
two ends). Such a token names the item's place in the node, and the next page is asked
by RSM index with that item beside it, which must be where the token says. What the
server sends is counted by a proxy between Roost and ejabberd: going on costs about a
page, not the node.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.pubsub import rsm
from tests.fixtures.backend import running_backend
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

ITEMS = 200
PAGE = 20
PADDING = "x" * 700
# About 30 items' XML: a whole answer is cut well before the node's end.
BOUND = 30 * (len(PADDING) + 120)


def item_id(n: int) -> str:
    return f"c{n:04d}"


@pytest.fixture
async def node(ejabberd_server: XmppServer) -> str:
    """A node of ejabberd's pubsub component with ITEMS items, published by alice."""
    name = f"cut-{uuid.uuid4().hex[:8]}"
    async with XmppPeer(ejabberd_server, "alice") as peer:
        service = ejabberd_server.pubsub_service
        await peer.create_node(name, {"pubsub#max_items": "max"}, service=service)
        items = [
            (item_id(n), f"<entry xmlns='urn:example:cut'><n>{n}</n><p>{PADDING}</p></entry>")
            for n in range(ITEMS)
        ]
        await peer.publish_many(name, items, service=service)
    return name


@pytest.fixture
async def bob(
    tmp_path: Path, ejabberd_server: XmppServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Backend, FaultProxy]]:
    """bob connected to ejabberd through a proxy that counts what the server sends."""
    monkeypatch.setattr(rsm, "MAX_REPLY_BYTES", BOUND)
    async with (
        FaultProxy(ejabberd_server.host, ejabberd_server.port) as proxy,
        running_backend(tmp_path / "cut.db", ejabberd_server, [], Config(prefetch=False)) as (
            backend,
            _log,
        ),
    ):
        jid, password, _options = ejabberd_server.credentials("bob")
        await backend.profiles.create("bob", jid, password, proxy.options())
        await backend.connect("bob")
        yield backend, proxy


async def test_going_on_after_a_cut_whole_answer_asks_one_page(
    ejabberd_server: XmppServer, node: str, bob: tuple[Backend, FaultProxy]
) -> None:
    backend, proxy = bob
    service = ejabberd_server.pubsub_service
    whole = await backend.pubsub.get_items("bob", service, node, {"use_cache": False})
    assert not whole.complete and whole.rsm_last is not None
    seen = [item.id for item in whole.items]
    assert 0 < len(seen) < ITEMS
    token = whole.rsm_last
    costs = []
    while token is not None:
        before = proxy.down_bytes
        page = await backend.pubsub.get_items(
            "bob", service, node, {"use_cache": False, "after": token, "max_items": PAGE}
        )
        costs.append(proxy.down_bytes - before)
        seen += [item.id for item in page.items]
        assert page.rsm_count == ITEMS
        token = None if page.complete else page.rsm_last
    assert seen == [item_id(n) for n in range(ITEMS)]
    # A page and its anchor item, with the stanza around them (about 800 bytes an item
    # here): far from the node's whole XML (156 KB), which each page used to cost.
    node_bytes = ITEMS * (len(PADDING) + 120)
    assert max(costs) < (PAGE + 1) * (len(PADDING) + 400), costs
    assert max(costs) < node_bytes / 4


async def test_going_on_before_a_cut_last_page_asks_one_page(
    ejabberd_server: XmppServer, node: str, bob: tuple[Backend, FaultProxy]
) -> None:
    backend, proxy = bob
    service = ejabberd_server.pubsub_service
    last = await backend.pubsub.get_items(
        "bob", service, node, {"use_cache": False, "before": "", "max_items": 150}
    )
    assert not last.complete and last.rsm_first is not None
    seen = [item.id for item in last.items]
    assert 0 < len(seen) < 150
    token = last.rsm_first
    costs = []
    while token is not None:
        before = proxy.down_bytes
        page = await backend.pubsub.get_items(
            "bob", service, node, {"use_cache": False, "before": token, "max_items": PAGE}
        )
        costs.append(proxy.down_bytes - before)
        seen = [item.id for item in page.items] + seen
        token = None if page.complete else page.rsm_first
    assert seen == [item_id(n) for n in range(ITEMS)]
    assert max(costs) < (PAGE + 1) * (len(PADDING) + 400), costs


async def test_a_token_whose_item_moved_reads_the_node_whole(
    ejabberd_server: XmppServer, node: str, bob: tuple[Backend, FaultProxy]
) -> None:
    backend, _proxy = bob
    service = ejabberd_server.pubsub_service
    whole = await backend.pubsub.get_items("bob", service, node, {"use_cache": False})
    assert whole.rsm_last is not None
    cut_at = len(whole.items)
    # Two items before the cut are retracted by their publisher: the token's item is no
    # longer where the token says.
    async with XmppPeer(ejabberd_server, "alice") as peer:
        await peer.retract(node, [item_id(0), item_id(1)], service=service)
    page = await backend.pubsub.get_items(
        "bob", service, node, {"use_cache": False, "after": whole.rsm_last, "max_items": PAGE}
    )
    assert [item.id for item in page.items] == [item_id(n) for n in range(cut_at, cut_at + PAGE)]
    assert page.rsm_count == ITEMS - 2
