"""Roost's RSM tokens and Roost's own paging of a whole server answer.

A token names an item and, when the page came from a server with RSM, that server's own
token for it (ejabberd's are timestamps). A token with no server token (from the cache,
from a server without RSM, or at a place where Roost cut a server's page to the reply
bound) still works anywhere: the item id is enough to page a whole answer locally. Such
a token also carries the item's place in the node, where it is known, so that a server
with RSM is asked for the next page by that place (RSM's ``<index/>``) rather than for
the whole node; the server's answer must show the token's item at that place, else the
node changed and the whole node is read after all.

Paging follows the shared contract: L is the node's items oldest first; no before/after
gives the newest ``max_items`` (all without it, up to the reply bound); ``after=X`` the
first N strictly after X; ``before=X`` the last N strictly before X; empty
``after``/``before`` start from the first / last item; an X not in L is item-not-found.
The windows themselves are :func:`roost.storage.paging.page_window`'s, which the item store
pages the cache by too; every answer is made by :func:`window_reply`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from roost.service.errors import InvalidArgument, XmppError
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.storage.paging import Window, bounded_length, page_window

# A page asked with before/after and no max_items holds this many items.
DEFAULT_PAGE_SIZE = 100
# A reply without max_items holds every item unless it passes one of these bounds (far
# under the bus's 64 MiB array limit); then it is the first page, complete false.
MAX_REPLY_ITEMS = 1_000
# Every reply, whatever its paging, carries at most this many bytes of items (as
# :func:`item_bytes` counts them): a page past it is cut, complete false, and goes on
# from its token. An eighth of the bus's 64 MiB array limit, a quarter of dbus-daemon's
# default 32 MiB message limit: a frontend unmarshals a reply whole, and several replies
# may be queued on one connection at once (docs/reliability.md, "Bounded replies").
MAX_REPLY_BYTES = 8 * 1024 * 1024
# What an item record costs on the bus besides its strings: four keys, each variant's
# signature, the strings' lengths and terminators, and 8-byte alignment (about 90 bytes).
RECORD_OVERHEAD = 128

_PREFIX = "r1."
# Ids that JSON writes as they are: printable ASCII but for the quote and the backslash.
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


class TokenParts(NamedTuple):
    """What a Roost token holds: the item, the server's token for it if any, and the
    item's place in the node (oldest first) when the token has no server token and the
    place was known."""

    item_id: str
    server_token: str | None
    place: int | None


def encode_token(item_id: str, server_token: str | None = None, index: int | None = None) -> str:
    """A Roost token for ``item_id`` (and the server's token for it, if any; else its
    place in the node, ``index``, if known)."""
    if server_token is not None:
        payload: list[str | int | None] = [item_id, server_token]
    elif _PLAIN.fullmatch(item_id):
        # What json.dumps writes for such an id, without its cost (two tokens a reply).
        plain = f'["{item_id}"]' if index is None else f'["{item_id}",null,{int(index)}]'
        return _packed(plain.encode())
    elif index is not None:
        payload = [item_id, None, index]
    else:
        payload = [item_id]
    return _packed(json.dumps(payload, separators=(",", ":")).encode())


def _packed(raw: bytes) -> str:
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str) -> TokenParts:
    """Everything a Roost token holds.

    Raises:
        InvalidArgument: the token was not made by encode_token.
    """
    bad = InvalidArgument(f"{token!r} is not an RSM token Roost gave out")
    if not token.startswith(_PREFIX):
        raise bad
    body = token[len(_PREFIX) :]
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if not isinstance(payload, list) or not payload or not isinstance(payload[0], str):
        raise bad
    if len(payload) == 1:
        return TokenParts(payload[0], None, None)
    if len(payload) == 2 and isinstance(payload[1], str):
        return TokenParts(payload[0], payload[1], None)
    index = payload[2] if len(payload) == 3 and payload[1] is None else None
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        return TokenParts(payload[0], None, index)
    raise bad


def decode_token(token: str) -> tuple[str, str | None]:
    """(item_id, server_token or None) from a Roost token.

    Raises:
        InvalidArgument: the token was not made by encode_token.
    """
    parts = read_token(token)
    return parts.item_id, parts.server_token


def _position(ids: Sequence[str], token: str) -> int:
    item_id, _server = decode_token(token)
    try:
        return ids.index(item_id)
    except ValueError:
        raise XmppError("item-not-found", f"no item {item_id!r} in the node") from None


def xml_size(item: PubsubItem) -> int:
    """An item's XML's length in UTF-8 bytes: what a server answer is cut by before
    its items are parsed (no more is read than could fit the reply)."""
    return len(item.xml.encode())


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def item_bytes(item: PubsubItem) -> int:
    """What an item's record takes on the bus, for the reply bound: its id, publisher,
    xml and parsed in UTF-8 bytes, and :data:`RECORD_OVERHEAD`."""
    size = RECORD_OVERHEAD + _utf8_length(item.id) + _utf8_length(item.publisher)
    size += _utf8_length(item.xml)
    return size if item.parsed is None else size + _utf8_length(item.parsed)


def _walks_backward(request: ItemsRequest) -> bool:
    """Whether a request's page ends at a fixed place and reaches back from it (before,
    or the newest N) rather than starting at one."""
    return request.before is not None or (request.max_items is not None and not request.is_paging)


def bounded_reply(reply: ItemsReply, request: ItemsRequest) -> ItemsReply:
    """``reply`` cut to :data:`MAX_REPLY_BYTES`, the same way whichever path answered.

    A page that passes it keeps the items nearest where the request starts (the oldest
    of a forward page, the newest of a backward one: ``before``, or the newest N), at
    least one, and says ``complete`` false; its token on the cut side names the item it
    stops at, so that ``after`` ``rsm_last`` (forward) or ``before`` ``rsm_first``
    (backward) goes on with the next. Cutting only shortens the page the request asked
    for, so every other field keeps its meaning. A reply within the bound is returned as
    it is (the same object: the bridge marshals a reply once).
    """
    items = reply.items
    # Four bytes a character at most: a reply this short in characters fits for sure.
    chars = sum(len(i.id) + len(i.publisher) + len(i.xml) + len(i.parsed or "") for i in items)
    if RECORD_OVERHEAD * len(items) + 4 * chars <= MAX_REPLY_BYTES:
        return reply
    backward = _walks_backward(request)
    ordered = reversed(items) if backward else iter(items)
    fit = bounded_length(map(item_bytes, ordered), len(items), MAX_REPLY_BYTES)
    if fit == len(items):
        return reply
    start = reply.first_index or 0
    # The cut side's token names its item's place where the reply says where it starts,
    # so that a server with RSM is asked for the next page at that place, not read whole.
    placed = reply.first_index is not None
    if backward:
        kept = items[len(items) - fit :]
        first_index = start + len(items) - fit
        return replace(
            reply,
            items=kept,
            rsm_first=encode_token(kept[0].id, index=first_index if placed else None),
            first_index=first_index,
            complete=False,
        )
    kept = items[:fit]
    last_index = start + fit - 1 if placed else None
    return replace(
        reply, items=kept, rsm_last=encode_token(kept[-1].id, index=last_index), complete=False
    )


def window_reply(
    items: list[PubsubItem],
    window: Window,
    count: int,
    *,
    first_token: str | None = None,
    last_token: str | None = None,
    from_cache: bool = False,
) -> ItemsReply:
    """The reply for a page: ``items`` are the window's items, ``count`` the length of
    the list it is a window of, and ``first_token`` / ``last_token`` the server's RSM
    tokens of its first and last items, when the page came from a server with RSM;
    ``from_cache`` whether it came from the cache.

    Every GetItems answer, from the cache or from the server, is made here, so that the
    paging metadata means the same wherever the page came from.
    """
    start = window.first_index
    return ItemsReply(
        items=items,
        from_cache=from_cache,
        rsm_first=encode_token(items[0].id, first_token, start) if items else None,
        rsm_last=encode_token(items[-1].id, last_token, start + len(items) - 1) if items else None,
        rsm_count=count,
        complete=window.complete,
        first_index=window.first_index if items else None,
    )


def request_window(ids: Sequence[str], request: ItemsRequest, bounded: int) -> Window:
    """The window of L (``ids``, oldest first) that ``request`` answers.

    ``bounded`` is how many leading items fit the reply bound, used only by a request
    with neither ``max_items`` nor ``before``/``after``.

    Raises:
        InvalidArgument: a malformed token.
        XmppError: item-not-found when the token's item is not in L.
    """
    count = len(ids)
    size = request.max_items or DEFAULT_PAGE_SIZE
    if request.after is not None:
        start = 0 if request.after == "" else _position(ids, request.after) + 1
        return page_window(count, size, after=start)
    if request.before is not None:
        end = count if request.before == "" else _position(ids, request.before)
        return page_window(count, size, before=end)
    if request.max_items is not None:
        return page_window(count, request.max_items)
    return page_window(count, bounded, after=0)


def page_items(items: Sequence[PubsubItem], request: ItemsRequest) -> ItemsReply:
    """Page ``items`` (L: the node's items oldest first, already restricted to
    ``request.item_ids``) as the request asks.

    Raises:
        InvalidArgument: a malformed token.
        XmppError: item-not-found when the token's item is not in L.
    """
    bounded = 0
    if request.max_items is None and not request.is_paging:
        bounded = bounded_length(map(xml_size, items), MAX_REPLY_ITEMS, MAX_REPLY_BYTES)
    window = request_window([item.id for item in items], request, bounded)
    return window_reply(list(items[window.start : window.end]), window, len(items))
