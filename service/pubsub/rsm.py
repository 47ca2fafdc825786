"""Roost's RSM tokens and Roost's own paging of a whole server answer.

A token names an item and, when the page came from a server with RSM, that server's own
token for it (ejabberd's are timestamps). A token with no server token (from the cache,
or from a server without RSM) still works anywhere: the item id is enough to page a
whole answer locally.

Paging follows the shared contract: L is the node's items oldest first; no before/after
gives the newest ``max_items`` (all without it); ``after=X`` the first N strictly after
X; ``before=X`` the last N strictly before X; empty ``after``/``before`` start from the
first / last item; an X not in L is item-not-found.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from roost.service.errors import InvalidArgument, XmppError
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem

# A page asked with before/after and no max_items holds this many items.
DEFAULT_PAGE_SIZE = 100
# A reply without max_items holds every item unless it passes one of these bounds (far
# under the bus's 64 MiB array limit); then it is the first page, complete false.
MAX_REPLY_ITEMS = 1_000
MAX_REPLY_BYTES = 8 * 1024 * 1024

_PREFIX = "r1."


def encode_token(item_id: str, server_token: str | None = None) -> str:
    """A Roost token for ``item_id`` (and the server's token for it, if any)."""
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


def _bounded(items: Sequence[PubsubItem]) -> int:
    """How many leading items fit MAX_REPLY_ITEMS and MAX_REPLY_BYTES (at least one)."""
    size = 0
    for index, item in enumerate(items[:MAX_REPLY_ITEMS]):
        size += len(item.xml.encode())
        if size > MAX_REPLY_BYTES and index > 0:
            return index
    return min(len(items), MAX_REPLY_ITEMS)


def page_items(items: Sequence[PubsubItem], request: ItemsRequest) -> ItemsReply:
    """Page ``items`` (L: the node's items oldest first, already restricted to
    ``request.item_ids``) as the request asks.

    Raises:
        InvalidArgument: a malformed token.
        XmppError: item-not-found when the token's item is not in L.
    """
    count = len(items)
    ids = [item.id for item in items]
    if request.after is not None:
        start = 0 if request.after == "" else _position(ids, request.after) + 1
        size = request.max_items or DEFAULT_PAGE_SIZE
        end = min(start + size, count)
        complete = end >= count
    elif request.before is not None:
        end = count if request.before == "" else _position(ids, request.before)
        size = request.max_items or DEFAULT_PAGE_SIZE
        start = max(end - size, 0)
        complete = start == 0
    elif request.max_items is not None:
        start, end = max(count - request.max_items, 0), count
        complete = request.max_items >= count
    else:
        start, end = 0, _bounded(items)
        complete = end >= count
    page = list(items[start:end])
    return ItemsReply(
        items=page,
        rsm_first=encode_token(page[0].id) if page else None,
        rsm_last=encode_token(page[-1].id) if page else None,
        rsm_count=count,
        complete=complete,
        first_index=start if page else None,
    )
