"""Roost's own paging of a whole answer, against the shared paging contract."""

from __future__ import annotations

import pytest

from roost.service.errors import InvalidArgument, XmppError
from roost.service.pubsub import rsm
from roost.service.pubsub.model import ItemsRequest, PubsubItem

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
    for bad in ("", "r1.!!!", "r1.e30", "i3"):
        with pytest.raises(InvalidArgument):
            rsm.decode_token(bad)


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
