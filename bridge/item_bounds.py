"""How large an item record may be on the bus, and how a notification is split to fit.

dbus-daemon refuses a message over its limit (32 MiB by default) and drops the
connection that sent it: one oversized reply or signal would take roostd off the bus.
The service layer cuts every GetItems reply to
:data:`~roost.service.pubsub.rsm.MAX_REPLY_BYTES` of items; here, an item whose record
alone passes :data:`MAX_ITEM_BYTES` travels without its content, and a notification
whose items together pass :data:`MAX_SIGNAL_ITEMS_BYTES` is sent as several
``ItemsEvent`` signals, each within it (an item larger than that alone is announced by
its id and size, its content read with GetItems ``item_ids``). docs/dbus-api.md
documents the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dbus_fast import Variant

from roost.bridge.variants import to_record
from roost.service.pubsub.model import PubsubItem
from roost.service.pubsub.rsm import MAX_REPLY_BYTES, RECORD_OVERHEAD, item_bytes

# One item's record: no more than a whole reply may carry.
MAX_ITEM_BYTES = MAX_REPLY_BYTES
# One ItemsEvent's items. Signals go to every frontend listening, often several, and
# arrive unasked: a frontend busy with other work should not have to take in more at once.
MAX_SIGNAL_ITEMS_BYTES = 1024 * 1024
_CONTENT = ("xml", "parsed")
_STRINGS = ("id", "publisher", *_CONTENT)


def _utf8_length(value: Any) -> int:
    text = str(value)
    return len(text) if text.isascii() else len(text.encode())


def record_bytes(record: Mapping[str, Any]) -> int:
    """What an item record takes on the bus, counted as
    :func:`~roost.service.pubsub.rsm.item_bytes` counts an item."""
    return RECORD_OVERHEAD + sum(
        _utf8_length(record[key]) for key in _STRINGS if record.get(key) is not None
    )


def _without_content(record: Mapping[str, Any]) -> dict[str, Any]:
    bare = {key: value for key, value in record.items() if key not in _CONTENT}
    bare["omitted"] = True
    bare["size"] = _utf8_length(record.get("xml", ""))
    return bare


def bounded_items(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """GetItems records, each item over :data:`MAX_ITEM_BYTES` without its content."""
    return [
        _without_content(record) if record_bytes(record) > MAX_ITEM_BYTES else dict(record)
        for record in records
    ]


def item_records(items: Iterable[PubsubItem]) -> list[dict[str, Variant]]:
    """GetItems' items as ``aa{sv}``, each bounded as :func:`bounded_items` bounds it, in
    one pass (what ``to_records(bounded_items(item.to_record() for item in items))``
    gives, without the dictionaries in between: a reply read from the database is
    marshalled on every call)."""
    records: list[dict[str, Variant]] = []
    for item in items:
        parsed = item.parsed
        # Four bytes a character at most: only a long item is measured.
        if 4 * (len(item.xml) + len(parsed or "")) > MAX_ITEM_BYTES and (
            item_bytes(item) > MAX_ITEM_BYTES
        ):
            records.append(to_record(_without_content(item.to_record())))
            continue
        record = {
            "id": Variant("s", item.id),
            "publisher": Variant("s", item.publisher),
            "xml": Variant("s", item.xml),
        }
        if parsed is not None:
            record["parsed"] = Variant("s", parsed)
        records.append(record)
    return records


def event_batches(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A notification's items as the ItemsEvent signals to send, in order: as few as
    keep each signal's items within :data:`MAX_SIGNAL_ITEMS_BYTES`. An item over it on
    its own is announced by id and size only (``omitted`` true). A notification without
    items (a purge, a deletion) is one signal with none."""
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    held = 0
    for record in records:
        size = record_bytes(record)
        if size > MAX_SIGNAL_ITEMS_BYTES:
            record, size = _without_content(record), record_bytes(_without_content(record))
        if batch and held + size > MAX_SIGNAL_ITEMS_BYTES:
            batches.append(batch)
            batch, held = [], 0
        batch.append(record)
        held += size
    if batch or not batches:
        batches.append(batch)
    return batches
