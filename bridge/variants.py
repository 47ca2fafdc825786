"""Records to and from ``a{sv}``: the D-Bus type of each key Roost sends is fixed here.

Frontends read these dictionaries by key and rely on each key's type (``rsm_count`` is
always ``u``, ``created`` always ``d``), so the types are declared per key rather than
guessed from Python values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dbus_fast import Variant

#: The D-Bus type of every record key Roost sends in an ``a{sv}``.
RECORD_SIGNATURES: dict[str, str] = {
    # items (GetItems, ItemsEvent, Search)
    "id": "s",
    "publisher": "s",
    "xml": "s",
    "parsed": "s",
    "profile": "s",
    "service": "s",
    "node": "s",
    "created": "d",
    "updated": "d",
    # Search: on the last hit of an answer cut at the reply bound
    "next_offset": "u",
    # GetItems metadata
    "from_cache": "b",
    "complete": "b",
    "rsm_first": "s",
    "rsm_last": "s",
    "rsm_count": "u",
    "cache_age": "d",
    # GetNodeState
    "state": "s",
    "analyser": "s",
    "type": "s",
    "subtype": "s",
    "item_count": "u",
    "synced_at": "d",
    "current": "b",
    "reason": "s",
    # ListAnalysers
    "name": "s",
    "node_prefix": "s",
    "namespace": "s",
    "to_sync": "b",
    "has_parser": "b",
    "has_match": "b",
    "source": "s",
    "refresh_interval": "d",
    "prefetch": "b",
    "indexed_keys": "as",
    # subscriptions
    "jid": "s",
    "subid": "s",
    "subscription": "s",
    # contacts (Contacts.List, ContactChanged) and subscription requests (ListRequests)
    "groups": "as",
    "pending_out": "b",
    "pending_in": "b",
    "removed": "b",
    "message": "s",
    "received": "d",
    # an item record whose content is too large for the bus
    "omitted": "b",
    "size": "u",
}


def plain(value: Any) -> Any:
    """``value`` with every variant replaced by its content, recursively."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def to_record(values: Mapping[str, Any]) -> dict[str, Variant]:
    """A record as ``a{sv}``; keys of unknown type go as strings, None values are left out."""
    record: dict[str, Variant] = {}
    for key, value in values.items():
        if value is None:
            continue
        signature = RECORD_SIGNATURES.get(key, "s")
        if signature == "d":
            value = float(value)
        elif signature == "u":
            value = int(value)
        elif signature == "b":
            value = bool(value)
        elif signature == "s":
            value = str(value)
        elif signature == "as":
            value = [str(v) for v in value]
        record[key] = Variant(signature, value)
    return record


def to_records(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Variant]]:
    """Many records as ``aa{sv}``."""
    return [to_record(row) for row in rows]


def form_values(config: Mapping[str, Any]) -> dict[str, Variant]:
    """A data form's values as ``a{sv}``: ``s`` for one value, ``as`` for several."""
    return {
        key: Variant("as", [str(v) for v in value])
        if isinstance(value, list | tuple)
        else Variant("s", str(value))
        for key, value in config.items()
    }
