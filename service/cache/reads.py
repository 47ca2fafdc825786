"""Answering a GetItems request from the database, exactly as the server path would.

The server path (``roost.service.pubsub``) defines what an answer is: the paging
contract, Roost's RSM tokens and the reply size bound. This module turns the same request
into an :meth:`ItemStore.get_items` call and its page into the same reply, so that a
frontend cannot tell where an answer came from except by ``from_cache``.
"""

from __future__ import annotations

from roost.service.errors import InvalidArgument
from roost.service.pubsub import rsm
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.service.pubsub.rsm import DEFAULT_PAGE_SIZE, TokenParts, read_token, window_reply
from roost.storage import NodeRecord
from roost.storage.errors import RowNotFound
from roost.storage.item_records import ItemRecord
from roost.storage.items import ItemStore
from roost.storage.paging import Window


def item_from_record(record: ItemRecord) -> PubsubItem:
    """The GetItems form of a stored item: ``parsed`` is the stored JSON text as it is."""
    return PubsubItem(record.item_id, record.publisher, record.data, record.parsed_json)


def _anchor(token: str | None) -> TokenParts | None:
    """What a ``before``/``after`` token holds; None for no token or ``""``."""
    return read_token(token) if token else None


async def answer_from_store(
    items: ItemStore, node: NodeRecord, request: ItemsRequest
) -> ItemsReply | None:
    """Answer ``request`` from the node's stored items.

    Args:
        items: the item store.
        node: a node whose stored items are the server's, complete and current (or, for
            a profile offline, as they were when last current).
        request: the GetItems request.

    Returns:
        The reply, or None when the store cannot answer it as the server would (a token
        naming an item the store does not hold: the server decides what that means).

    Raises:
        InvalidArgument: a malformed token.
    """
    truncated = bool(node.extra.get("truncated"))
    paged = request.before is not None or request.after is not None
    if truncated:
        # Only the newest items are kept: only a request for the newest N, N within what
        # is kept, has the same answer here as on the server.
        stored = await items.count_items(node.id)
        if paged or request.item_ids or request.max_items is None:
            return None
        if request.max_items > stored:
            return None
    before, after = _anchor(request.before), _anchor(request.after)
    anchor = before or after
    try:
        page = await items.get_items(
            node.id,
            item_ids=request.item_ids or None,
            max_items=request.max_items,
            before=request.before if before is None else before.item_id,
            after=request.after if after is None else after.item_id,
            anchor_place=None if anchor is None else anchor.place,
            page_size=DEFAULT_PAGE_SIZE,
            # Read only when no other paging is given: at most what a reply may hold.
            max_reply_items=rsm.MAX_REPLY_ITEMS,
            max_reply_bytes=rsm.MAX_REPLY_BYTES,
        )
    except RowNotFound:
        return None
    except ValueError as exc:  # InvalidQuery: the request model let something through
        raise InvalidArgument(str(exc)) from None
    found = [item_from_record(r) for r in page.items]
    count = page.count
    window = Window(page.first_index, page.first_index + len(found), page.complete)
    if truncated:
        # The newest N of a node kept in part: older items are on the server, so the
        # answer is not the whole node, and its place is counted from the server's start.
        count = int(node.extra.get("total", page.count))
        window = Window(count - len(found), count, False)
    return window_reply(found, window, count, from_cache=True)
