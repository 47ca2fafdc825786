"""Roost's RSM tokens and Roost's own paging of a whole server answer.

A token names an item and, when the page came from a server with RSM, that server's own
token for it (ejabberd's are timestamps). A token with no server token (from the cache,
or from a server without RSM) still works anywhere: the item id is enough to page a
whole answer locally.

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

from roost.service.errors import InvalidArgument, XmppError
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.storage.paging import Window, bounded_length, page_window

# A page asked with before/after and no max_items holds this many items.
DEFAULT_PAGE_SIZE = 100
# A reply without max_items holds every item unless it passes one of these bounds (far
# under the bus's 64 MiB array limit); then it is the first page, complete false.
MAX_REPLY_ITEMS = 1_000
MAX_REPLY_BYTES = 8 * 1024 * 1024

_PREFIX = "r1."
# Ids that JSON writes as they are: printable ASCII but for the quote and the backslash.
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def encode_token(item_id: str, server_token: str | None = None) -> str:
    """A Roost token for ``item_id`` (and the server's token for it, if any)."""
    if server_token is None and _PLAIN.fullmatch(item_id):
        # What json.dumps writes for such an id, without its cost (two tokens a reply).
        raw = f'["{item_id}"]'.encode()
    else:
        payload = [item_id] if server_token is None else [item_id, server_token]
        raw = json.dumps(payload, separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, str | None]:
    """(item_id, server_token or None) from a Roost token.

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
    if (
        not isinstance(payload, list)
        or len(payload) not in (1, 2)
        or not all(isinstance(part, str) for part in payload)
    ):
        raise bad
    return payload[0], payload[1] if len(payload) == 2 else None


def _position(ids: Sequence[str], token: str) -> int:
    item_id, _server = decode_token(token)
    try:
        return ids.index(item_id)
    except ValueError:
        raise XmppError("item-not-found", f"no item {item_id!r} in the node") from None


def xml_size(item: PubsubItem) -> int:
    """An item's size for the reply bound: its XML's length in UTF-8 bytes."""
    return len(item.xml.encode())


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
    return ItemsReply(
        items=items,
        from_cache=from_cache,
        rsm_first=encode_token(items[0].id, first_token) if items else None,
        rsm_last=encode_token(items[-1].id, last_token) if items else None,
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
