"""Item records stay within what the bus carries: a large item travels without its
content, a large notification as several signals, each within the signal bound."""

from __future__ import annotations

from roost.bridge.item_bounds import (
    MAX_ITEM_BYTES,
    MAX_SIGNAL_ITEMS_BYTES,
    bounded_items,
    event_batches,
    item_records,
    record_bytes,
)
from roost.bridge.variants import to_records
from roost.service.pubsub.model import PubsubItem


def record(item_id: str, size: int) -> dict[str, object]:
    xml = f'<item xmlns="http://jabber.org/protocol/pubsub" id="{item_id}">'
    xml += "x" * max(0, size - len(xml) - 7) + "</item>"
    return {"id": item_id, "publisher": "a@example.org", "xml": xml, "parsed": "{}"}


def test_small_items_are_left_whole() -> None:
    items = [record("a", 1000), record("b", 2000)]
    assert bounded_items(items) == items
    assert event_batches(items) == [items]
    assert event_batches([]) == [[]]


def test_an_item_too_large_for_the_bus_travels_without_its_content() -> None:
    small, huge = record("small", 100), record("huge", MAX_ITEM_BYTES + 1)
    bounded = bounded_items([small, huge])
    assert bounded[0] == small
    assert bounded[1] == {
        "id": "huge",
        "publisher": "a@example.org",
        "omitted": True,
        "size": len(str(huge["xml"])),
    }
    marshalled = to_records(bounded)
    assert marshalled[1]["omitted"].signature == "b"
    assert marshalled[1]["size"].signature == "u"


def test_a_large_notification_is_split_into_signals_within_the_bound() -> None:
    count = 40
    items = [record(f"i{n}", MAX_SIGNAL_ITEMS_BYTES // 12) for n in range(count)]
    batches = event_batches(items)
    assert len(batches) == 4, [len(b) for b in batches]
    assert [r["id"] for b in batches for r in b] == [f"i{n}" for n in range(count)]
    assert all(sum(map(record_bytes, b)) <= MAX_SIGNAL_ITEMS_BYTES for b in batches)
    assert all("xml" in r and "omitted" not in r for b in batches for r in b)


def test_an_item_over_the_signal_bound_is_announced_by_id() -> None:
    small, big = record("small", 100), record("big", MAX_SIGNAL_ITEMS_BYTES + 1)
    (batch,) = event_batches([small, big, small])
    assert [r["id"] for r in batch] == ["small", "big", "small"]
    assert batch[0] == small and batch[2] == small
    assert batch[1]["omitted"] is True and "xml" not in batch[1]
    assert batch[1]["size"] == len(str(big["xml"]))


def test_item_records_marshal_as_the_bounded_records_do() -> None:
    small, huge = record("small", 100), record("huge", MAX_ITEM_BYTES + 1)
    unparsed = {**record("plain", 300), "parsed": None}
    items = [
        PubsubItem(str(r["id"]), str(r["publisher"]), str(r["xml"]), r["parsed"])  # type: ignore[arg-type]
        for r in (small, huge, unparsed)
    ]
    expected = to_records(bounded_items(item.to_record() for item in items))
    assert item_records(items) == expected
    assert [sorted(r) for r in item_records(items)] == [
        ["id", "parsed", "publisher", "xml"],
        ["id", "omitted", "publisher", "size"],
        ["id", "publisher", "xml"],
    ]
