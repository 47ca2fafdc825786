"""Both read paths give one answer to every GetItems request, on Prosody and on ejabberd.

A person's blog (a XEP-0277 node: the built-in analyser and its parser apply) is written by
another client of the account before Roost starts, as a real account's would be. Once the
cache holds it, every request shape of docs/dbus-api.md is asked of the cache
(``use_cache`` true, the node current) and of the server (``use_cache`` false), and the
answers are compared field by field: the items (id, publisher, xml, parsed), ``rsm_first``
and ``rsm_last`` as the item ids they name, ``rsm_count``, ``complete`` and
``first_index``. Only ``from_cache`` and the tokens' server parts may differ.

The items' ``parsed`` is compared apart, after every other field of every answer, so that a
difference there is reported as such and hides no other.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from roost.service.backend import Backend
from roost.service.pubsub import rsm
from roost.service.pubsub.model import MAX_PAGE_ITEMS, ItemsReply
from roost.service.pubsub.rsm import decode_token
from tests.contacts.test_contacts_cache import MICROBLOG, posts, write_blog
from tests.fixtures.backend import running_backend
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

# Posts on the blog: enough for several pages of every size asked, few enough for
# Prosody's file storage, which makes filling a node quadratic.
POSTS = 160
# The page size of the walks with max_items: no divisor of POSTS, so the last page is short.
PAGE = 13
# By-id requests asked in random order, each answered in node order.
BY_ID_ROUNDS = 30


def named(token: str | None) -> str | None:
    """The item id a Roost token names (its server part, if any, left aside)."""
    return None if token is None else decode_token(token)[0]


def fields(reply: ItemsReply) -> dict[str, Any]:
    """Everything an answer says but ``from_cache``, the tokens' server parts and
    ``parsed``."""
    return {
        "items": [(i.id, i.publisher, i.xml) for i in reply.items],
        "rsm_first": named(reply.rsm_first),
        "rsm_last": named(reply.rsm_last),
        "rsm_count": reply.rsm_count,
        "complete": reply.complete,
        "first_index": reply.first_index,
    }


def short(reply: ItemsReply) -> str:
    ids = [i.id.rsplit("-", 1)[-1] for i in reply.items]
    return (
        f"{len(ids)} items {ids[:3]}…{ids[-3:]} first_index={reply.first_index} "
        f"complete={reply.complete} rsm_count={reply.rsm_count}"
    )


@dataclass
class Paths:
    """One account's blog, readable through the cache and through the server."""

    backend: Backend
    profile: str
    owner: str
    # The node's ids in node order, as the cache holds them.
    order: list[str] = field(default_factory=list)
    # Requests whose answers differ on ``parsed`` only, with how.
    parsed_differs: list[str] = field(default_factory=list)
    asked: int = 0

    async def get(self, use_cache: bool, **options: Any) -> ItemsReply:
        reply = await self.backend.pubsub.get_items(
            self.profile, self.owner, MICROBLOG, {**options, "use_cache": use_cache}
        )
        where = "the cache" if use_cache else "the server"
        assert reply.from_cache is use_cache, f"{options} was not answered by {where}"
        return reply

    async def cached(self, **options: Any) -> ItemsReply:
        return await self.get(True, **options)

    async def server(self, **options: Any) -> ItemsReply:
        return await self.get(False, **options)

    def same(self, cached: ItemsReply, server: ItemsReply, what: str) -> None:
        """``cached`` and ``server`` say the same (``parsed`` noted, not asserted)."""
        self.asked += 1
        assert fields(cached) == fields(server), (
            f"{what}: the cache answered {short(cached)}, the server {short(server)}"
        )
        cached_parsed = [i.parsed for i in cached.items]
        server_parsed = [i.parsed for i in server.items]
        if cached_parsed != server_parsed:
            differing = sum(c != s for c, s in zip(cached_parsed, server_parsed, strict=True))
            none = sum(s is None for s in server_parsed)
            self.parsed_differs.append(
                f"{what}: {differing} of {len(cached_parsed)} items' parsed differ "
                f"({none} without parsed on the server path)"
            )

    async def both(self, what: str = "", **options: Any) -> tuple[ItemsReply, ItemsReply]:
        cached = await self.cached(**options)
        server = await self.server(**options)
        self.same(cached, server, what or str(options))
        return cached, server

    def parsed_is_the_same(self) -> None:
        shown = "\n".join(self.parsed_differs[:5])
        assert not self.parsed_differs, (
            f"{len(self.parsed_differs)} of {self.asked} answers differ on the items' parsed "
            f"between the paths:\n{shown}"
        )


@asynccontextmanager
async def blog_paths(server: XmppServer, database: str, count: int) -> AsyncIterator[Paths]:
    """A fresh account whose blog holds ``count`` posts, written by another client of the
    account before Roost starts; the blog synchronised in Roost's cache."""
    (me,) = unique_names("paths", 1)
    await server.register_many([me])
    async with XmppPeer(server, me) as peer:
        await write_blog(peer, server, posts(me, count))
    owner = server.jid(me)
    async with running_backend(database, server, [me]) as (backend, log):
        await backend.connect(me)
        # The first read finds the node on the server and starts its sync (unless the
        # notification sent at login started it already).
        await backend.pubsub.get_items(me, owner, MICROBLOG, {"max_items": 1})
        await log.wait_state(owner, MICROBLOG, "completed")
        paths = Paths(backend, me, owner)
        # Not a read without options: a test may bound those first (and the cache keeps
        # recent answers).
        every = await paths.cached(after="", max_items=MAX_PAGE_ITEMS)
        assert len(every.items) == count and every.complete
        paths.order = [i.id for i in every.items]
        yield paths


async def walk(paths: Paths, direction: str, max_items: int | None) -> None:
    """Page the node from one end to the other on both paths, each continuing with its own
    tokens, and at each step also with the other path's token."""
    size = {} if max_items is None else {"max_items": max_items}
    what = f"{direction} walk{f' by {max_items}' if max_items else ''}"
    cached, server = await paths.both(f"{what}, first page", **{direction: ""}, **size)
    seen = [i.id for i in cached.items]
    pages = 1
    while not cached.complete:
        assert pages <= len(paths.order), f"{what}: no end after {pages} pages"
        token = "rsm_first" if direction == "before" else "rsm_last"
        own_cached, own_server = getattr(cached, token), getattr(server, token)
        step = f"{what}, page {pages + 1}"
        next_cached = await paths.cached(**{direction: own_cached}, **size)
        next_server = await paths.server(**{direction: own_server}, **size)
        paths.same(next_cached, next_server, step)
        # A token continues the same on the other path.
        crossed_cached = await paths.cached(**{direction: own_server}, **size)
        crossed_server = await paths.server(**{direction: own_cached}, **size)
        paths.same(crossed_cached, next_server, f"{step}, the server's token on the cache")
        paths.same(next_cached, crossed_server, f"{step}, the cache's token on the server")
        cached, server = next_cached, next_server
        ids = [i.id for i in cached.items]
        seen = ids + seen if direction == "before" else seen + ids
        pages += 1
    assert seen == paths.order, f"{what}: the pages do not make up the node"


@pytest.mark.slow
async def test_every_request_shape_has_one_answer_on_both_paths(
    xmpp_server: XmppServer, database_url: str
) -> None:
    async with blog_paths(xmpp_server, database_url, POSTS) as paths:
        order = paths.order
        whole, _ = await paths.both("no options")
        assert whole.complete and whole.first_index == 0 and whole.rsm_count == POSTS

        for n in (1, PAGE, POSTS - 1, POSTS, POSTS + 50, 10_000):
            newest, _ = await paths.both(f"max_items {n}", max_items=n)
            assert [i.id for i in newest.items] == order[-n:]
            assert newest.complete is (n >= POSTS)

        for direction in ("after", "before"):
            for size in (PAGE, None):
                await walk(paths, direction, size)

        # A token from a page in the middle, each path's, on both paths and both ways.
        middle_cached, middle_server = await paths.both(
            "a middle page", after=(await paths.cached(max_items=60)).rsm_first, max_items=PAGE
        )
        for token in (middle_cached.rsm_first, middle_server.rsm_first):
            await paths.both("before a middle page's first item", before=token, max_items=PAGE)
            await paths.both("before a middle page's first item, page of 100", before=token)
        for token in (middle_cached.rsm_last, middle_server.rsm_last):
            await paths.both("after a middle page's last item", after=token, max_items=PAGE)
            await paths.both("after a middle page's last item, page of 100", after=token)
        # Past either end: an empty page.
        last = (await paths.server(max_items=1)).rsm_last
        first = (await paths.server(after="", max_items=1)).rsm_first
        empty_after, _ = await paths.both("after the newest item", after=last)
        assert empty_after.items == [] and empty_after.complete
        empty_before, _ = await paths.both("before the oldest item", before=first, max_items=3)
        assert empty_before.items == [] and empty_before.complete

        chooser = random.Random(POSTS)
        known = chooser.sample(order, 12)
        asked = [*known, "no-such-post", "nor-this-one", "gone-too"]
        chooser.shuffle(asked)
        by_ids, _ = await paths.both("item_ids", item_ids=asked)
        assert [i.id for i in by_ids.items] == [i for i in order if i in known]
        assert by_ids.rsm_count == len(known) and by_ids.complete
        await paths.both("item_ids, max_items 5", item_ids=asked, max_items=5)
        await paths.both("item_ids, max_items 50", item_ids=asked, max_items=50)
        await paths.both("item_ids, after ''", item_ids=asked, after="", max_items=5)
        await paths.both("item_ids, before ''", item_ids=asked, before="", max_items=5)
        await paths.both("item_ids, one", item_ids=[known[0]])
        unknown, _ = await paths.both("item_ids, none known", item_ids=["no-such-post"])
        assert unknown.items == [] and unknown.rsm_count == 0

        paths.parsed_is_the_same()


async def test_by_id_answers_come_in_node_order(xmpp_server: XmppServer, database_url: str) -> None:
    async with blog_paths(xmpp_server, database_url, 60) as paths:
        chooser = random.Random()
        for round_ in range(BY_ID_ROUNDS):
            asked = [*chooser.sample(paths.order, chooser.randint(2, 12)), "no-such-post"]
            chooser.shuffle(asked)
            server = await paths.server(item_ids=asked)
            wanted = [i for i in paths.order if i in asked]
            assert [i.id for i in server.items] == wanted, (
                f"round {round_}: asked {asked}, the server path answered "
                f"{[i.id for i in server.items]}"
            )
            paths.same(await paths.cached(item_ids=asked), server, f"round {round_}")
        paths.parsed_is_the_same()


@pytest.mark.parametrize("bound", ["items", "bytes"])
async def test_a_reply_past_the_size_bound_is_cut_at_the_same_item_on_both_paths(
    xmpp_server: XmppServer, database_url: str, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    async with blog_paths(xmpp_server, database_url, 60) as paths:
        every = await paths.server(after="", max_items=MAX_PAGE_ITEMS)
        sizes = [rsm.item_bytes(item) for item in every.items]
        if bound == "items":
            monkeypatch.setattr(rsm, "MAX_REPLY_ITEMS", 25)
        else:
            # Room for 17 items and half of the 18th.
            monkeypatch.setattr(rsm, "MAX_REPLY_BYTES", sum(sizes[:17]) + sizes[17] // 2)
        held = 25 if bound == "items" else 17
        cached, server = await paths.both(f"no options, bounded by {bound}")
        assert [i.id for i in cached.items] == paths.order[:held]
        assert not cached.complete and cached.rsm_count == 60 and cached.first_index == 0
        # Either path goes on from either page's last item to the end (pages with
        # before/after are cut at the byte bound too).
        for token in (cached.rsm_last, server.rsm_last):
            rest, _ = await paths.both(f"after a page cut by {bound}", after=token)
            ids = [i.id for i in rest.items]
            while not rest.complete and rest.rsm_last is not None:
                rest, _ = await paths.both(f"on after a cut by {bound}", after=rest.rsm_last)
                ids += [i.id for i in rest.items]
            assert ids == paths.order[held:] and rest.complete
        # item_ids without max_items are bounded alike.
        asked = paths.order[10:50]
        cut, _ = await paths.both(f"item_ids, bounded by {bound}", item_ids=asked)
        assert not cut.complete and cut.rsm_count == len(asked)
        paths.parsed_is_the_same()
