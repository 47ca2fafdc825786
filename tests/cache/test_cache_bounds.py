"""Every sync is bounded while it runs: no more than the node limit is fetched from a
server with RSM, and pages that cannot be honest end the sync with a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roost.service.cache.source import XmppSyncSource
from roost.service.errors import XmppError
from roost.service.pubsub import query as query_module
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.service.pubsub.query import PageGuard
from tests.cache.test_cache_sync import Roost, both, make_blog, roost, wait_state
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

__all__ = ["roost"]


def item(item_id: str) -> PubsubItem:
    return PubsubItem(
        item_id, "", f'<item xmlns="http://jabber.org/protocol/pubsub" id="{item_id}"/>'
    )


class FetchCounter(XmppSyncSource):
    """The real source, counting the items a full fetch hands to the sync."""

    fetched = 0

    async def fetch_all_items(  # type: ignore[override]
        self, profile: str, service: str, node: str, page_size: int, *, newest: int | None = None
    ) -> AsyncIterator[list[PubsubItem]]:
        async for page in super().fetch_all_items(profile, service, node, page_size, newest=newest):
            self.fetched += len(page)
            yield page


@pytest.mark.xmpp
@pytest.mark.parametrize("held_back", [True, False], ids=["held-back", "trimmed-after"])
async def test_a_sync_keeps_the_newest_items_up_to_the_limit_and_answers_as_the_server(
    roost: Roost,
    xmpp_server: XmppServer,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    held_back: bool,
) -> None:
    """Only the newest 50 are fetched where pages can be asked for (ejabberd). Without
    RSM (Prosody) the whole node comes in one answer: its newest 50 are held back and
    only they are handed to the store; a limit above what is held back (one raised for
    large nodes) has every page stored as it comes and the node trimmed to its newest
    after. Either way the cache holds the newest 50 and answers as the server."""
    if not held_back:
        monkeypatch.setattr(query_module, "STREAMED_HOLD_ITEMS", 30)
    source = FetchCounter(roost.server, roost.sessions)
    async with roost.restarted_cache(source=source, max_items_per_node=50) as cache:
        node = await make_blog(roost, xmpp_server, 120)
        await roost.pubsub.get_items("bob", xmpp_server.pubsub_service, node, ItemsRequest())
        await wait_state(recorder, node, "completed")
        state = await cache.get_node_state("bob", xmpp_server.pubsub_service, node)
        assert state["item_count"] == 50
        passed_on = not held_back and xmpp_server.kind == "prosody"
        assert source.fetched == (120 if passed_on else 50)
        newest = await both(roost, xmpp_server, node, max_items=20)
        assert [i.id for i in newest.items] == [f"p{n:03d}" for n in range(100, 120)]
        assert newest.rsm_count == 120
        kept = await both(roost, xmpp_server, node, max_items=50)
        assert [i.id for i in kept.items] == [f"p{n:03d}" for n in range(70, 120)]


def test_pages_that_repeat_an_item_do_not_converge() -> None:
    guard = PageGuard("evil.example", "endless", 1 << 30)
    guard.check([item("a"), item("b")], 10)
    with pytest.raises(XmppError, match="came twice") as failure:
        guard.check([item("b"), item("c")], 10)
    assert failure.value.condition == "undefined-condition"


def test_a_count_that_jumps_does_not_converge() -> None:
    guard = PageGuard("evil.example", "endless", 1 << 30)
    guard.check([item(f"a{n}") for n in range(5)], 100)
    with pytest.raises(XmppError, match="count went from 100 to 1000000000"):
        guard.check([item(f"b{n}") for n in range(5)], 1_000_000_000)


def test_more_items_than_the_count_do_not_converge() -> None:
    guard = PageGuard("evil.example", "endless", 1 << 30)
    with pytest.raises(XmppError, match="for a count of 3"):
        for page in range(300):
            guard.check([item(f"p{page}-{n}") for n in range(5)], 3)


def test_the_byte_budget_is_counted() -> None:
    guard = PageGuard("evil.example", "huge", 1000)
    guard.check([item(f"i{n}") for n in range(5)], None)
    assert not guard.over_budget
    guard.check([item(f"j{n}") for n in range(20)], None)
    assert guard.over_budget
    assert guard.too_large().condition == "resource-constraint"


@pytest.mark.xmpp
# The floor is the free space of the disk holding an SQLite file; a database server
# watches its own disk (Database.free_bytes is None there).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_syncs_pause_below_the_free_space_floor_and_say_why(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    # A floor above any disk's free space: the disk is "full".
    async with roost.restarted_cache(min_free_bytes=1 << 62) as cache:
        node = await make_blog(roost, xmpp_server, 3)
        await roost.pubsub.get_items("bob", xmpp_server.pubsub_service, node, ItemsRequest())
        await wait_state(recorder, node, "error")
        state = await cache.get_node_state("bob", xmpp_server.pubsub_service, node)
        assert "min_free_disk_mb" in state["reason"] and state["item_count"] == 0
    async with roost.restarted_cache(min_free_bytes=0) as cache:
        await cache.sync("bob", xmpp_server.pubsub_service, node)
        await wait_state(recorder, node, "completed")
        await both(roost, xmpp_server, node)
