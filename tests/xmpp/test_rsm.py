"""Roost's own paging of a whole answer, and its placing of a server's RSM page, against
the shared paging contract."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.service.errors import InvalidArgument, XmppError
from roost.service.pubsub import rsm
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.service.pubsub.query import ItemsQuery
from tests.storage.test_paging import reference_page

L = [PubsubItem(id=f"i{n}", publisher="", xml=f"<item id='i{n}'/>") for n in range(10)]


def page(**options: object) -> tuple[list[str], bool, int | None]:
    reply = rsm.page_items(L, ItemsRequest.from_options(options))
    return [i.id for i in reply.items], reply.complete, reply.first_index


def test_tokens_round_trip() -> None:
    assert rsm.decode_token(rsm.encode_token("a/b é")) == ("a/b é", None)
    assert rsm.decode_token(rsm.encode_token("x", "2026-01-01T00:00:00Z")) == (
        "x",
        "2026-01-01T00:00:00Z",
    )
    placed = rsm.encode_token("x", index=7)
    assert rsm.read_token(placed) == rsm.TokenParts("x", None, 7)
    assert rsm.decode_token(placed) == ("x", None)
    # A server token makes the place needless: it is left out.
    assert rsm.read_token(rsm.encode_token("x", "s", 7)) == rsm.TokenParts("x", "s", None)
    for bad in ("", "r1.!!!", "r1.e30", "i3", "r1.WyJ4IixudWxsLC0xXQ", "r1.WyJ4IixudWxsLHRydWVd"):
        with pytest.raises(InvalidArgument):
            rsm.decode_token(bad)


@given(
    st.text(max_size=40) | st.from_regex(r"[ -~]{0,40}", fullmatch=True),
    st.none() | st.integers(min_value=0, max_value=10**9),
)
def test_tokens_are_the_json_form_of_the_item_id(item_id: str, place: int | None) -> None:
    payload = [item_id] if place is None else [item_id, None, place]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    token = rsm.encode_token(item_id, index=place)
    assert token == "r1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert rsm.read_token(token) == rsm.TokenParts(item_id, None, place)


def test_whole_and_newest() -> None:
    assert page() == ([f"i{n}" for n in range(10)], True, 0)
    assert page(max_items=3) == (["i7", "i8", "i9"], False, 7)
    assert page(max_items=10) == ([f"i{n}" for n in range(10)], True, 0)


def test_after_and_before() -> None:
    t = rsm.encode_token
    assert page(after="", max_items=4) == (["i0", "i1", "i2", "i3"], False, 0)
    assert page(after=t("i5"), max_items=4) == (["i6", "i7", "i8", "i9"], True, 6)
    assert page(after=t("i9"), max_items=4) == ([], True, None)
    assert page(before="", max_items=4) == (["i6", "i7", "i8", "i9"], False, 6)
    assert page(before=t("i3"), max_items=4) == (["i0", "i1", "i2"], True, 0)
    with pytest.raises(XmppError) as caught:
        page(after=t("nope"))
    assert caught.value.name == "Xmpp.ItemNotFound"


def test_size_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsm, "MAX_REPLY_ITEMS", 4)
    ids, complete, _ = page()
    assert ids == ["i0", "i1", "i2", "i3"] and not complete
    reply = rsm.page_items(L, ItemsRequest())
    assert reply.rsm_last is not None
    assert rsm.decode_token(reply.rsm_last)[0] == "i3"


@given(
    count=st.integers(min_value=0, max_value=30),
    max_items=st.none() | st.integers(min_value=1, max_value=40),
    mode=st.sampled_from(["none", "before", "after"]),
    data=st.data(),
)
def test_paging_a_whole_answer_equals_the_reference(
    count: int, max_items: int | None, mode: str, data: st.DataObject
) -> None:
    ids = [f"i{n}" for n in range(count)]
    items = [PubsubItem(id=i, publisher="", xml=f"<item id='{i}'/>") for i in ids]
    options: dict[str, object] = {} if max_items is None else {"max_items": max_items}
    reference: dict[str, object] = {"max_items": max_items}
    if mode != "none":
        anchor = data.draw(st.sampled_from(["", *ids]))
        options[mode] = rsm.encode_token(anchor) if anchor else ""
        reference[mode] = anchor
    reply = rsm.page_items(items, ItemsRequest.from_options(options))
    expected = reference_page(ids, **reference)  # type: ignore[arg-type]
    got = [i.id for i in reply.items]
    assert got == expected.ids
    assert (reply.rsm_count, reply.complete) == (expected.count, expected.complete)
    assert reply.first_index == (expected.first_index if got else None)
    named = [rsm.decode_token(t)[0] if t else None for t in (reply.rsm_first, reply.rsm_last)]
    assert named == ([got[0], got[-1]] if got else [None, None])


def items(*ids: str) -> list[PubsubItem]:
    return [PubsubItem(id=i, publisher="", xml=f"<item id='{i}'/>") for i in ids]


def test_a_server_page_is_placed_where_the_server_says() -> None:
    from_rsm = ItemsQuery._from_rsm
    # The newest 3 of 10: complete only when it starts the node.
    newest = from_rsm(items("i7", "i8", "i9"), (10, "s7", "s9", 7), ItemsRequest(max_items=3))
    assert (newest.first_index, newest.complete, newest.rsm_count) == (7, False, 10)
    assert rsm.decode_token(newest.rsm_first or "") == ("i7", "s7")
    # ejabberd gives a negative first index for the newest N of fewer than N: not a
    # number Roost reads, so the page is placed from the node's end.
    more = from_rsm(items("i0", "i1"), (2, "s0", "s1", None), ItemsRequest(max_items=5))
    assert (more.first_index, more.complete) == (0, True)
    after = from_rsm(items("i4", "i5"), (10, "s4", "s5", 4), ItemsRequest(after="x", max_items=2))
    assert (after.first_index, after.complete) == (4, False)
    end = from_rsm(items("i8", "i9"), (10, "s8", "s9", 8), ItemsRequest(after="x", max_items=2))
    assert end.complete


def test_an_empty_server_page_is_complete_either_way() -> None:
    for request in (
        ItemsRequest(after=rsm.encode_token("i9", "s9")),
        ItemsRequest(before=rsm.encode_token("i0", "s0"), max_items=3),
        ItemsRequest(),
    ):
        reply = ItemsQuery._from_rsm([], (10, None, None, None), request)
        assert reply.items == [] and reply.complete and reply.rsm_count == 10
        assert reply.first_index is None and reply.rsm_first is None


def test_a_server_page_past_the_byte_bound_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    page = items(*(f"i{n}" for n in range(6)))
    monkeypatch.setattr(rsm, "MAX_REPLY_BYTES", len(page[0].xml) * 3)
    reply = ItemsQuery._from_rsm(page, (50, "s0", "s5", 0), ItemsRequest())
    assert [i.id for i in reply.items] == ["i0", "i1", "i2"]
    assert not reply.complete and reply.rsm_count == 50
    # The server's token of the item cut at is not known: the item id alone goes on.
    assert rsm.decode_token(reply.rsm_last or "") == ("i2", None)
