"""How large an item record may be on the bus.

dbus-daemon refuses a message over its limit (32 MiB by default on the session bus) and
drops the connection that sent it: one oversized reply or signal would take roostd off
the bus. So an item whose XML alone passes :data:`MAX_ITEM_BYTES` travels without its
content, and a notification whose items together pass :data:`MAX_SIGNAL_ITEMS_BYTES` is
announced by ids only; the content is read with GetItems (``item_ids``), which answers
each item within the bound on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dbus_fast import Variant

from roost.bridge.variants import to_record
from roost.service.pubsub.model import PubsubItem

MAX_ITEM_BYTES = 16 * 1024 * 1024
MAX_SIGNAL_ITEMS_BYTES = 1024 * 1024
_CONTENT = ("xml", "parsed")


def _size(record: Mapping[str, Any]) -> int:
    return sum(len(str(record.get(key, ""))) for key in _CONTENT)


def _without_content(record: Mapping[str, Any]) -> dict[str, Any]:
    bare = {key: value for key, value in record.items() if key not in _CONTENT}
    bare["omitted"] = True
    bare["size"] = len(str(record.get("xml", "")))
    return bare


def bounded_items(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """GetItems records, each item over :data:`MAX_ITEM_BYTES` without its content."""
    return [
        _without_content(record) if _size(record) > MAX_ITEM_BYTES else dict(record)
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
        if len(item.xml) + (0 if parsed is None else len(parsed)) > MAX_ITEM_BYTES:
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


def bounded_event_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ItemsEvent records: as they are, or by ids only when together they pass
    :data:`MAX_SIGNAL_ITEMS_BYTES`."""
    if sum(_size(record) for record in records) <= MAX_SIGNAL_ITEMS_BYTES:
        return records
    return [_without_content(record) for record in records]
