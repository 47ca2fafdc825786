"""Item queries against the server, with RSM where the server has it.

Whether a service implements RSM on pubsub is learnt from its answers (neither Prosody
nor ejabberd advertises it): a query carrying ``<set/>`` whose answer has a ``<set/>``
proves it; an answer without one (Prosody ignores ``<set/>`` and returns every item)
disproves it, and that answer is then paged by Roost itself.

Without RSM, the newest N are asked as ``max_items`` N, and the node's count and the
items' places come from its item listing (disco#items: ids, not payloads), asked beside
it; a request by item ids asks those ids (and the listing, to order two or more, until
the service's answers have shown they come in node order: :mod:`.answer_order`); any
other is one whole read paged here. What decides it is what each read costs the one
such server Roost is tested against, Prosody 0.12 (its default storage, a 1,000-item
node; docs/performance.md, "Server reads"): a listing costs it 0.8-0.9 of a whole read
(it loads and decodes every item to list their ids), and a read by id loads the node's
whole store once per id, so 20 items read by id cost it about three whole reads. A
listing still leaves the payloads off the wire: beside ``max_items`` it makes the
newest N as fast as a whole read for small items and faster for larger ones.

For the same reason a whole node from such a service is never read by ids in batches
(the listing, then a few thousand ids a request): on 10,000 items an id costs Prosody
0.6 s, the whole read 4 s; on 100,000, 5.8 s an id against 115 s for the whole read, so
days for the node. It is one whole read, taken in as it arrives
(:func:`roost.service.pubsub.protocol.stream_items`): pages of
:data:`STREAMED_PAGE_ITEMS` items, the connection paused while the reader is behind, so
that the daemon's memory does not grow with the node.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from roost.service.concurrently import both
from roost.service.errors import XmppError
from roost.service.pubsub import protocol as p
from roost.service.pubsub import rsm
from roost.service.pubsub.answer_order import AnswerOrder, ByIdAnswerOrder
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.service.pubsub.rsm import (
    DEFAULT_PAGE_SIZE,
    decode_token,
    page_items,
    window_reply,
    xml_size,
)
from roost.service.xmpp.client import RoostClient
from roost.storage.paging import Window, bounded_length, page_window

log = logging.getLogger(__name__)

FETCH_PAGE_SIZE = 500
# ejabberd reads the whole node for every page it answers, so a page costs nearly the
# same whatever its size: past the first page, a walk asks for larger ones. Bounded so
# that one answer stays a few megabytes, and the two pages a sync holds (one stored, the
# next fetched; about 5 KB of objects an item) keep its peak under 150 MiB: 5,000 took
# a 100,000-item sync to 150 MiB, 2,000 doubled its time.
MAX_FETCH_PAGE_ITEMS = 4000
MAX_FETCH_PAGE_BYTES = 4 * 1024 * 1024
# The pages a whole answer read as it arrives is given in (a service without RSM): with
# the one the store writes and the one read ahead, a few thousand items held at a time.
STREAMED_PAGE_ITEMS = 2000
# The most items of such an answer held back, as text, when only the node's newest are
# wanted: which they are is known at the answer's end. Past it (a node limit raised far
# above the default), the pages go on as they come and the caller keeps the newest, as
# the cache's sync does, so that the held items never grow with the node.
STREAMED_HOLD_ITEMS = 10_000
# The most item XML one walk of a node fetches: a node past it is kept in part (its
# newest items), so that no server can make a sync fill the disk.
FETCH_BYTE_BUDGET = 256 * 1024 * 1024
# How far a node's count may move between two pages of one walk before the walk is
# taken for a server that does not converge (items published meanwhile move it a little).
COUNT_DRIFT = 1000


def next_fetch_page_size(first: int, fetched: int, count: int | None, fetched_bytes: int) -> int:
    """How many items to ask for next when walking a whole node.

    Half the node, so that the server prepares one page while the caller stores the
    other, but never fewer than the first page nor more than the bounds allow for items
    the size of those fetched so far.

    Args:
        first: the first page's size.
        fetched: items fetched so far.
        count: the node's item count the server gave, if any.
        fetched_bytes: the serialised size of the items fetched so far.
    """
    if count is None or fetched == 0:
        return first
    by_bytes = MAX_FETCH_PAGE_BYTES * fetched // max(fetched_bytes, 1)
    wanted = -(-count // 2)
    return max(first, min(wanted, MAX_FETCH_PAGE_ITEMS, by_bytes))


class ItemsQuery:
    """Runs items queries for the profiles' clients and remembers which services have RSM."""

    def __init__(self) -> None:
        self._rsm: dict[str, bool] = {}
        # Whether each service's disco#items lists a node's items oldest first.
        self._oldest_first: dict[str, bool] = {}
        self._by_id_order = ByIdAnswerOrder()
        self._walked: dict[tuple[str, str], int] = {}

    def walked_total(self, service: str, node: str) -> int | None:
        """How many items the node held by the last :meth:`fetch_all` of it (its count,
        also when only the newest were fetched); None when that walk could not tell."""
        return self._walked.get((service, node))

    def known_rsm(self, service: str) -> bool | None:
        """What is known of ``service``'s RSM support (None: not yet known)."""
        return self._rsm.get(service)

    def known_by_id_order(self, service: str) -> AnswerOrder | None:
        """What is known of the order ``service`` answers items asked by id in."""
        return self._by_id_order.known(service)

    def known_listing_order(self, service: str) -> bool | None:
        """Whether ``service`` lists a node's items oldest first (None: not yet known)."""
        return self._oldest_first.get(service)

    async def server_supports_rsm(self, client: RoostClient, service: str, node: str) -> bool:
        """Whether ``service`` pages pubsub queries with RSM (asked once per service).

        The probe asks for the newest item by RSM and by ``max_items`` 1 at once: a
        service with RSM answers its ``<set/>``, one without still answers a single
        item. Asked by RSM alone, a service without it (Prosody 0.12) answers the whole
        node in one stanza, built whole: 45 MB for 100,000 items.
        """
        known = self._rsm.get(service)
        if known is None:
            reply = await self._ask(client, service, node, p.rsm_set(1, before=""), max_items=1)
            known = self._rsm[service] = p.parse_rsm(reply) is not None
        return known

    async def _ask(
        self,
        client: RoostClient,
        service: str,
        node: str,
        rsm: ET.Element | None = None,
        item_ids: tuple[str, ...] = (),
        max_items: int | None = None,
    ) -> ET.Element:
        payload = _items_query(node, rsm, item_ids, max_items)
        reply = await p.send_iq(client, "get", service, payload)
        if rsm is not None:
            self._rsm[service] = p.parse_rsm(reply) is not None
        return reply

    async def get_items(
        self, client: RoostClient, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """Answer ``request`` from the server, paging by RSM or locally.

        Raises:
            XmppError: an error answered by the server.
            InvalidArgument: a malformed token.

        .. versionchanged:: the newest N from a service without RSM are asked as
           ``max_items`` N beside the node's item listing, no longer read whole.
        """
        if request.item_ids:
            return page_items(await self._by_ids(client, service, node, request), request)
        newest = request.max_items is not None and not request.is_paging
        if newest and service not in self._rsm:
            return await self._newest_learning_rsm(client, service, node, request)
        if not await self.server_supports_rsm(client, service, node):
            if newest:
                return await self._newest_listed(client, service, node, request)
            return page_items(await self._whole(client, service, node), request)
        query = self._translate(request)
        if query is None:
            # A token with no server token on an RSM server: by its item's place, else
            # walk the node and page locally.
            placed = await self._at_place(client, service, node, request)
            if placed is not None:
                return placed
            return page_items(
                [i async for page in self.fetch_all(client, service, node) for i in page], request
            )
        reply = await self._ask(client, service, node, query)
        items = p.parse_items(reply)
        meta = p.parse_rsm(reply)
        if meta is None:
            return page_items(items, request)
        return self._from_rsm(items, meta, request)

    def _translate(self, request: ItemsRequest) -> ET.Element | None:
        size = request.max_items or DEFAULT_PAGE_SIZE
        token = request.before if request.before is not None else request.after
        server_token = None
        if token:
            _item, server_token = decode_token(token)
            if server_token is None:
                return None
        if request.before is not None:
            return p.rsm_set(size, before=server_token or "")
        if request.after is not None:
            return p.rsm_set(size, after=server_token)
        if request.max_items is not None:
            # The newest N is the last page; unlike max_items, it also tells the count.
            return p.rsm_set(request.max_items, before="")
        return p.rsm_set(rsm.MAX_REPLY_ITEMS)

    async def _at_place(
        self, client: RoostClient, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply | None:
        """The page after or before a token that has no server token but its item's place
        (a page Roost cut to the reply bound, or one from the cache), asked by RSM index
        with the token's own item beside it; None when the token names no place, or the
        server does not show its item there (the node changed since): the caller then
        reads the whole node.

        One page is asked, not the node: on ejabberd, continuing a cut page used to
        walk the whole node for every page.
        """
        token = request.after or request.before
        assert token  # an empty one asks for the first or last page: no token to place
        parts = rsm.read_token(token)
        if parts.place is None:
            return None
        size = request.max_items or DEFAULT_PAGE_SIZE
        forward = request.after is not None
        # The page and the token's item: after it, the item first; before it, last.
        start = parts.place if forward else max(parts.place - size, 0)
        asked = size + 1 if forward else parts.place - start + 1
        reply = await self._ask(client, service, node, p.rsm_set(asked, index=start))
        items = p.parse_items(reply)
        meta = p.parse_rsm(reply)
        if meta is None:
            # No RSM after all: that was the whole node.
            return page_items(items, request)
        count, first, last, index = meta
        anchor = items[0 if forward else -1] if items else None
        if (
            count is None
            or index not in (None, start)
            or anchor is None
            or (anchor.id != parts.item_id)
        ):
            log.info(
                "%s/%s: item %r is no longer at %d; reading the node whole",
                service,
                node,
                parts.item_id,
                parts.place,
            )
            return None
        if forward:
            window = page_window(count, size, after=parts.place + 1)
            page, first, last = items[1:], None, last
        else:
            window = page_window(count, size, before=parts.place)
            page, first, last = items[:-1], first, None
        if len(page) != window.length:
            return None
        return window_reply(page, window, count, first_token=first, last_token=last)

    @staticmethod
    def _from_rsm(
        items: list[PubsubItem],
        meta: tuple[int | None, str | None, str | None, int | None],
        request: ItemsRequest,
    ) -> ItemsReply:
        """The reply for a page the server cut by RSM, placed where the server says.

        A page read backward (``before``, or the newest N) is complete when it starts
        the node, one read forward when it reaches its end; an empty page always is
        (nothing lies that way). Without ``max_items`` or paging, the page (the first
        MAX_REPLY_ITEMS) is cut further to the reply's byte bound, as a whole answer is.
        """
        count, first, last, index = meta
        count = len(items) if count is None else count
        backward = request.before is not None or (
            request.max_items is not None and not request.is_paging
        )
        if not items:
            at = 0 if backward else count
            return window_reply([], Window(at, at, True), count)
        if index is not None:
            start = index
        elif backward and not request.before:
            start = max(count - len(items), 0)
        else:
            start = 0
        if backward:
            window = page_window(count, len(items), before=min(start + len(items), count))
        else:
            fit = len(items)
            if not request.is_paging and request.max_items is None:
                fit = bounded_length(map(xml_size, items), rsm.MAX_REPLY_ITEMS, rsm.MAX_REPLY_BYTES)
            if fit < len(items):
                # Cut here: the server's token for the last item is not known.
                items, last = items[:fit], None
            window = page_window(count, len(items), after=min(start, count))
        return window_reply(items, window, count, first_token=first, last_token=last)

    async def _whole(self, client: RoostClient, service: str, node: str) -> list[PubsubItem]:
        """Every item of the node from its one whole answer, read as it arrives; each item
        is kept as its text only (its element tree takes five times as much), since only
        a page of them is answered."""
        whole: list[PubsubItem] = []
        async with aclosing(self._streamed_whole(client, service, node, None)) as pages:
            async for page in pages:
                whole += [replace(item, element=None) for item in page]
        return whole

    async def _newest_learning_rsm(
        self, client: RoostClient, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """The newest ``request.max_items`` from a service whose RSM support is not known
        yet: one request carrying both RSM's last page of N and ``max_items`` N, which a
        service with RSM answers as that page (with the node's count) and one without
        (Prosody) as its newest N. The read itself learns the support, where a probe
        first would cost ejabberd a second read of the node."""
        size = request.max_items
        assert size is not None
        reply = await self._ask(client, service, node, p.rsm_set(size, before=""), max_items=size)
        meta = p.parse_rsm(reply)
        if meta is not None:
            return self._from_rsm(p.parse_items(reply), meta, request)
        return await self._newest_listed(client, service, node, request, answered=reply)

    async def _newest_listed(
        self,
        client: RoostClient,
        service: str,
        node: str,
        request: ItemsRequest,
        answered: ET.Element | None = None,
    ) -> ItemsReply:
        """The newest ``request.max_items`` from a service without RSM: ``max_items`` N
        and the node's item listing, asked together (only the listing when ``answered``
        is the service's answer to the first); the listing gives the count and the
        page's place.

        The two must agree: the listing names each item once, and the answer's items are
        its last ones, all of them when fewer than N came. When they do not (an item
        published or retracted between the two, a listing that names items a read does
        not return, a listing refused), the node is read whole and paged here, as
        before: never a page placed by a listing it does not match.
        """
        size = request.max_items
        assert size is not None
        if answered is None:
            reply, listing = await both(
                self._ask(client, service, node, max_items=size),
                self._try_listing(client, service, node),
            )
        else:
            reply, listing = answered, await self._try_listing(client, service, node)
        items = p.parse_items(reply)
        ids = [item.id for item in items]
        if isinstance(listing, XmppError):
            log.info("%s/%s: no item listing (%s); reading it whole", service, node, listing)
            return page_items(await self._whole(client, service, node), request)
        if items:
            # The answer's last item is the node's newest (XEP-0060's max_items).
            oldest_first = await self._listing_oldest_first(
                client, service, node, listing, newest=ids[-1]
            )
            if not oldest_first:
                listing.reverse()
        count = len(listing)
        if (
            len(set(listing)) != count
            or len(ids) != min(size, count)
            or listing[count - len(ids) :] != ids
        ):
            log.info(
                "%s/%s: its newest %d and its item listing disagree; reading it whole",
                service,
                node,
                size,
            )
            return page_items(await self._whole(client, service, node), request)
        return window_reply(items, page_window(count, size), count)

    async def _try_listing(
        self, client: RoostClient, service: str, node: str
    ) -> list[str] | XmppError:
        """The node's item listing, or the error the service answered instead (for the
        caller to raise only when it needs the listing)."""
        try:
            return await self.list_item_ids(client, service, node)
        except XmppError as error:
            return error

    async def _by_ids(
        self, client: RoostClient, service: str, node: str, request: ItemsRequest
    ) -> list[PubsubItem]:
        """The items asked for by id, in node order.

        XEP-0060 gives a by-id answer no order: Prosody answers in the order asked,
        ejabberd in the node's. The node's item listing (disco#items), asked beside the
        items when two or more are, gives the order on every server, once its direction
        on the service is known (see :meth:`_listing_oldest_first`), until the service's
        answers have shown they come in node order (:mod:`.answer_order`).
        """
        asked = self._ask(client, service, node, item_ids=request.item_ids)
        answer_order = self._by_id_order.known(service)
        if len(request.item_ids) < 2 or answer_order is AnswerOrder.OLDEST_FIRST:
            return p.parse_items(await asked)
        if answer_order is AnswerOrder.NEWEST_FIRST:
            return p.parse_items(await asked)[::-1]
        reply, listing = await both(asked, self._try_listing(client, service, node))
        items = p.parse_items(reply)
        if len(items) < 2:
            return items
        if isinstance(listing, XmppError):
            raise listing
        if not await self._listing_oldest_first(client, service, node, listing):
            listing.reverse()
        order = {item_id: n for n, item_id in enumerate(listing)}
        # An item the listing misses was published after it: the newest.
        ordered = sorted(items, key=lambda item: order.get(item.id, len(order)))
        self._by_id_order.observe(
            service,
            request.item_ids,
            [item.id for item in items],
            [item.id for item in ordered if item.id in order],
        )
        return ordered

    async def _listing_oldest_first(
        self,
        client: RoostClient,
        service: str,
        node: str,
        listing: list[str],
        *,
        newest: str | None = None,
    ) -> bool:
        """Whether ``service``'s disco#items lists a node's items oldest first (ejabberd
        does, Prosody newest first).

        Learnt once per service, from ``listing`` (a node's, two items at least) and the
        node's newest item: ``newest``, its id when the caller just read it, else asked
        (``max_items`` 1, which XEP-0060 defines as the newest). Until that can be told
        (the node changed between the two), a service with RSM is taken for oldest first
        and one without for newest first, as the servers tested do.
        """
        known = self._oldest_first.get(service)
        if known is not None:
            return known
        guess = self._rsm.get(service) is not False
        if len(listing) < 2:
            return guess
        if newest is None:
            found = p.parse_items(await self._ask(client, service, node, max_items=1))
            newest = found[0].id if len(found) == 1 else None
        if newest is None or newest not in (listing[0], listing[-1]) or listing[0] == listing[-1]:
            log.info("%s: cannot tell the direction of its item listings yet", service)
            return guess
        known = self._oldest_first[service] = newest == listing[-1]
        return known

    async def fetch_all(
        self,
        client: RoostClient,
        service: str,
        node: str,
        page_size: int = FETCH_PAGE_SIZE,
        *,
        newest: int | None = None,
        byte_budget: int = FETCH_BYTE_BUDGET,
    ) -> AsyncIterator[list[PubsubItem]]:
        """Every item of the node (the ``newest`` ones only, when given), oldest first, in
        pages (one whole answer without RSM).

        The first page has ``page_size`` items; later ones grow (see
        :func:`next_fetch_page_size`). The walk is bounded while it runs, whatever the
        server says: at most ``newest`` items and ``byte_budget`` bytes of item XML are
        fetched, and a server whose pages do not converge (an item id seen twice, a count
        that changes wildly, pages beyond what its count needs) fails it. A service
        without RSM sends the whole node whatever is asked: past
        :data:`STREAMED_HOLD_ITEMS`, its pages are given as they come, more than
        ``newest`` items when it has more, and the caller keeps the newest.

        Raises:
            XmppError: an error answered by the server, or ``undefined-condition`` for
                pages that do not converge.
        """
        self._walked.pop((service, node), None)
        if not await self.server_supports_rsm(client, service, node):
            # Closed with the walk, so that a walk left early lets the connection read.
            async with aclosing(self._streamed_whole(client, service, node, newest)) as whole:
                async for items in whole:
                    yield items
            return
        walk = PageGuard(service, node, byte_budget)
        # The first page is read whole: its count decides how the node is walked.
        reply = await self._ask(client, service, node, p.rsm_set(page_size))
        items = await p.parse_items_off_loop(reply)
        meta = p.parse_rsm(reply)
        del reply
        if meta is None:
            # No RSM after all: the whole node came at once.
            self._walked[(service, node)] = len(items)
            yield items if newest is None else items[-newest:]
            return
        count, _first, last, index = meta
        if count is not None:
            self._walked[(service, node)] = count
        if newest is not None and count is not None and count > newest:
            # Only the newest are kept: walk back from the end instead.
            for page in await self._newest(client, service, node, newest, page_size, walk):
                yield page
            return
        arriving: AsyncGenerator[list[PubsubItem]] = _given(items)
        del items
        answers: list[ET.Element] = []
        fetched, fetched_bytes = 0, 0
        while True:
            got, got_bytes = 0, 0
            async with aclosing(arriving) as batches:
                async for batch in batches:
                    walk.check(batch, count)
                    if newest is not None and fetched + got + len(batch) > newest:
                        raise walk.diverged(f"more items than the {count} its count announced")
                    if walk.over_budget:
                        raise walk.too_large()
                    got += len(batch)
                    got_bytes += sum(len(item.xml) for item in batch)
                    yield batch
                    # The caller has the batch: not held while the next one is parsed.
                    del batch
            if answers:
                # A page taken in as it arrived: its RSM <set/> came with its end.
                meta = p.parse_rsm(answers.pop())
                if meta is None:
                    raise walk.diverged("a page came without its RSM <set/>")
                count, _first, last, index = meta
                walk.check([], count)
                if count is not None:
                    self._walked[(service, node)] = count
            fetched += got
            fetched_bytes += got_bytes
            done = (index or 0) + got >= (count if count is not None else 0)
            if not got or done or last is None:
                return
            size = next_fetch_page_size(page_size, fetched, count, fetched_bytes)
            # Later pages, of thousands of items, are taken in as they arrive, a trip's
            # worth at a time: a page never stands whole in memory, and each batch is
            # stored and let go while the rest is read. A whole page's item trees lived
            # long enough for every young collection of the garbage collector to walk
            # them again, on the event loop's thread or holding the GIL it waits for.
            query = _items_query(node, p.rsm_set(size, after=last))
            arriving = p.stream_items(client, service, query, p.ITEMS_PER_TRIP, answers.append)

    async def _streamed_whole(
        self, client: RoostClient, service: str, node: str, newest: int | None
    ) -> AsyncGenerator[list[PubsubItem]]:
        """Every item of a node from a service without RSM, from its one whole answer
        read as it arrives, in pages of :data:`STREAMED_PAGE_ITEMS`: what the daemon
        holds of the answer is bounded, not the node's size (reading it by ids in
        batches instead would cost Prosody a load of the node's store per id). The
        answer's size is the node's count, which exact paging metadata needs.

        With ``newest`` up to :data:`STREAMED_HOLD_ITEMS`, only the newest ``newest``
        items are kept (as text: their trees take five times as much) and given at the
        end; with more, every page is given as it comes, and the caller keeps the newest.
        """
        payload = _items_query(node)
        held: deque[PubsubItem] | None = None
        if newest is not None and newest <= STREAMED_HOLD_ITEMS:
            held = deque(maxlen=newest)
        count = 0
        async with aclosing(p.stream_items(client, service, payload, STREAMED_PAGE_ITEMS)) as pages:
            async for items in pages:
                count += len(items)
                if held is None:
                    yield items
                else:
                    held.extend(replace(item, element=None) for item in items)
        self._walked[(service, node)] = count
        if held:
            kept = list(held)
            for start in range(0, len(kept), STREAMED_PAGE_ITEMS):
                yield kept[start : start + STREAMED_PAGE_ITEMS]

    async def _newest(
        self,
        client: RoostClient,
        service: str,
        node: str,
        newest: int,
        page_size: int,
        walk: PageGuard,
    ) -> list[list[PubsubItem]]:
        """The newest ``newest`` items in pages, oldest first, walked from the end.

        Bounded in memory by ``newest`` items (and the byte budget): the pages are kept
        until the walk ends, since the store writes a node's items oldest first.
        """
        pages: list[list[PubsubItem]] = []
        held = 0
        before = ""
        while held < newest:
            size = min(page_size, newest - held)
            reply = await self._ask(client, service, node, p.rsm_set(size, before=before))
            items = await p.parse_items_off_loop(reply)
            meta = p.parse_rsm(reply)
            if not items:
                break
            if meta is None:
                # As in the forward walk: without it, nothing says where the next page
                # starts, nor that the node still has the count the walk was sized by.
                raise walk.diverged("a page came without its RSM <set/>")
            count, first, _last, _index = meta
            walk.check(items, count)
            items = items[-(newest - held) :]
            pages.append(items)
            held += len(items)
            if first is None or walk.over_budget:
                break
            before = first
        pages.reverse()
        return pages

    async def list_item_ids(self, client: RoostClient, service: str, node: str) -> list[str]:
        """The node's item ids as disco#items lists them, the listing read as it arrives
        (built whole, a 100,000-item listing took the daemon 70 MiB)."""
        ids: list[str] = []
        async with aclosing(p.stream_listing(client, service, node, STREAMED_PAGE_ITEMS)) as pages:
            async for names in pages:
                ids += names
        return ids


def _items_query(
    node: str,
    rsm: ET.Element | None = None,
    item_ids: tuple[str, ...] = (),
    max_items: int | None = None,
) -> ET.Element:
    """The ``<pubsub/>`` of an items query of ``node``."""
    payload = p.pubsub()
    items = ET.SubElement(payload, f"{{{p.NS_PUBSUB}}}items", node=node)
    if max_items is not None:
        items.set("max_items", str(max_items))
    for item_id in item_ids:
        ET.SubElement(items, f"{{{p.NS_PUBSUB}}}item", id=item_id)
    if rsm is not None:
        payload.append(rsm)
    return payload


async def _given(items: list[PubsubItem]) -> AsyncGenerator[list[PubsubItem]]:
    """A page already read whole, as the batches of one taken in as it arrives (none
    for an empty page)."""
    if items:
        yield items


class PageGuard:
    """Checks one walk's pages against what an honest server sends."""

    def __init__(self, service: str, node: str, byte_budget: int) -> None:
        self._where = f"{service}/{node}"
        self._budget = byte_budget
        self._ids: set[str] = set()
        self._count: int | None = None
        self._bytes = 0
        self._pages = 0

    @property
    def over_budget(self) -> bool:
        """Whether the walk has fetched its byte budget."""
        return self._bytes >= self._budget

    def diverged(self, what: str) -> XmppError:
        """The error that ends a walk whose pages do not converge."""
        return XmppError(
            "undefined-condition",
            f"the server's pages of {self._where} do not converge: {what}",
        )

    def check(self, items: list[PubsubItem], count: int | None) -> None:
        """Take a page in; raise :meth:`diverged`'s error when it cannot be honest."""
        self._pages += 1
        for item in items:
            if item.id in self._ids:
                raise self.diverged(f"item {item.id!r} came twice")
            self._ids.add(item.id)
        if count is not None:
            if self._count is not None and abs(count - self._count) > COUNT_DRIFT:
                raise self.diverged(f"its count went from {self._count} to {count}")
            self._count = count if self._count is None else self._count
            if len(self._ids) > count + COUNT_DRIFT:
                raise self.diverged(f"{len(self._ids)} items for a count of {count}")
        self._bytes += sum(len(item.xml) for item in items)

    def too_large(self) -> XmppError:
        """The error that ends a walk from the oldest item past the byte budget (such a
        walk cannot keep the newest items instead)."""
        return XmppError(
            "resource-constraint",
            f"{self._where} holds more than {self._budget // (1024 * 1024)} MiB of items; "
            "lower [cache] max_items_per_node to keep only its newest",
        )
