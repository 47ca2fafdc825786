"""Reads for a profile that is offline: a node's last complete copy, and how old it is.

Online, only nodes kept current by events (or refreshed periodically) are served. Offline
nothing is current, yet a frontend still wants what it saw last: a node whose copy is
complete is served with ``cache_age``, how old the copy may be.

A copy is complete when the node's last sync completed and no sync has touched its rows
since: a sync in progress or interrupted (``none``, "sync interrupted") leaves the node in
another state, and such a node is never served here. A sync that failed (``error``) is
the one exception: when it failed before writing anything (a resync cut short by a
disconnection while it listed or fetched), the copy is still the whole node as of the
last moment it was current, and the node's ``extra`` says so (``copy_intact``). A failed
sync that had begun to write leaves a mixture, never served.

Its age counts from the last moment it was known current. That moment is stored in the
node's ``extra`` as ``current_until`` when the profile's session goes down and when the
cache closes, for the nodes current then. Where it is missing (the daemon crashed) or
older than the last sync, ``synced_at`` stands in: the copy was current at the end of
its sync and can only have become newer since, so the age is an upper bound.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import replace

from roost.service.cache.reads import answer_from_store
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.storage import NodeRecord
from roost.storage.errors import RowNotFound
from roost.storage.items import ItemStore
from roost.storage.nodes import NodeStore

CURRENT_UNTIL = "current_until"
# Set on a node whose sync failed: whether its stored copy is still its last complete one.
COPY_INTACT = "copy_intact"


def is_complete(record: NodeRecord) -> bool:
    """Whether the node's stored items are a whole copy of the node, as of some moment."""
    if not record.extra.get("synced_once"):
        return False
    if record.sync_state == "error":
        return record.extra.get(COPY_INTACT) is True
    return record.sync_state == "completed"


def known_current_at(record: NodeRecord) -> float:
    """The last moment the node's stored copy is known to have been current."""
    moments = [float(record.extra.get("synced_at", record.sync_state_updated))]
    current_until = record.extra.get(CURRENT_UNTIL)
    if isinstance(current_until, int | float) and not isinstance(current_until, bool):
        moments.append(float(current_until))
    return max(moments)


async def answer_offline(
    items: ItemStore, record: NodeRecord, request: ItemsRequest
) -> ItemsReply | None:
    """Answer ``request`` from the node's complete copy, with its ``cache_age``.

    Returns:
        The reply, or None when the copy is not complete or cannot answer the request as
        the server would (see :func:`answer_from_store`).
    """
    if not is_complete(record):
        return None
    reply = await answer_from_store(items, record, request)
    if reply is None:
        return None
    return replace(reply, cache_age=max(0.0, time.time() - known_current_at(record)))


async def record_current_until(nodes: NodeStore, node_ids: Iterable[int], moment: float) -> None:
    """Store ``moment`` as the last time these nodes' copies were known current."""
    for node_id in node_ids:
        # A node deleted meanwhile (its profile, or the node on the server) has no copy.
        with contextlib.suppress(RowNotFound):
            await nodes.update_extra(node_id, {CURRENT_UNTIL: moment})
