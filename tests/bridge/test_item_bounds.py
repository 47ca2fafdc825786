"""Item records stay within what the bus carries: a large item travels without its
content, a large notification by ids only."""

from __future__ import annotations

from roost.bridge.item_bounds import (
    MAX_ITEM_BYTES,
    MAX_SIGNAL_ITEMS_BYTES,
    bounded_event_items,
    bounded_items,
    item_records,
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
    assert bounded_event_items(items) == items


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


def test_a_large_notification_is_announced_by_ids() -> None:
    count = 40
    items = [record(f"i{n}", MAX_SIGNAL_ITEMS_BYTES // count + 100) for n in range(count)]
    announced = bounded_event_items(items)
    assert [r["id"] for r in announced] == [f"i{n}" for n in range(count)]
    assert all(r["omitted"] and "xml" not in r and "parsed" not in r for r in announced)
    assert sum(len(str(r)) for r in announced) < 10_000


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
