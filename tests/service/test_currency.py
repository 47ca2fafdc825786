"""The recent answers a node's currency keeps: given back equal while the node is
unchanged, forgotten when it changes or stops being served, bounded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from roost.service.cache import currency as currency_module
from roost.service.cache.currency import NodeCurrency, node_key
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.storage import NodeRecord

RECORD = NodeRecord(
    id=1,
    profile="alice",
    profile_id=1,
    service="pubsub.example.org",
    name="blog",
    analyser="microblog",
    type="blog",
    subtype=None,
    sync_state="completed",
    sync_state_updated=0.0,
    subscribed=True,
    extra={},
)
KEY = node_key(RECORD)


def reply(first: int, count: int, *, parsed: bool = True) -> ItemsReply:
    items = [
        PubsubItem(
            id=f"i{n}",
            publisher="bob@example.org" if n % 2 else "",
            xml=f"<item xmlns='http://jabber.org/protocol/pubsub' id='i{n}'/>",
            parsed=f'{{"n": {n}}}' if parsed else None,
        )
        for n in range(first, first + count)
    ]
    return ItemsReply(
        items,
        from_cache=True,
        rsm_first=f"t{first}",
        rsm_last=f"t{first + count - 1}",
        rsm_count=500,
        complete=False,
        first_index=first,
    )


def served() -> NodeCurrency:
    async def load(node_id: int) -> NodeRecord:
        raise AssertionError("not loaded in these tests")

    currency = NodeCurrency(lambda node_id: None, load)
    currency.serve(RECORD)
    return currency


def test_an_answer_comes_back_equal_while_the_node_is_unchanged() -> None:
    currency = served()
    requests = [
        ItemsRequest(max_items=20),
        ItemsRequest(max_items=20, after="t19"),
        ItemsRequest(max_items=20, before="t40"),
        ItemsRequest(item_ids=("i3", "i1")),
    ]
    answers = [reply(20 * n, 20, parsed=n % 2 == 0) for n in range(len(requests))]
    for request, answer in zip(requests, answers, strict=True):
        assert currency.recent_answer(KEY, request) is None
        currency.remember_answer(KEY, request, RECORD, answer)
    for request, answer in zip(requests, answers, strict=True):
        again = currency.recent_answer(KEY, request)
        assert again == answer and again.metadata() == answer.metadata()
        assert again.first_index == answer.first_index
    # Another request, another profile's node: not answered.
    assert currency.recent_answer(KEY, ItemsRequest(max_items=21)) is None
    assert currency.recent_answer(("bob", *KEY[1:]), requests[0]) is None
    # The node changed (its record replaced): nothing read against the old one is reused.
    currency.refresh(replace(RECORD, sync_state_updated=1.0))
    assert all(currency.recent_answer(KEY, request) is None for request in requests)


def test_a_dropped_node_forgets_its_answers() -> None:
    currency = served()
    currency.remember_answer(KEY, ItemsRequest(max_items=5), RECORD, reply(0, 5))
    currency.drop(KEY)
    currency.serve(RECORD)
    assert currency.recent_answer(KEY, ItemsRequest(max_items=5)) is None


def test_the_least_recently_used_answers_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(currency_module, "HOT_ITEMS", 50)
    currency = served()
    requests = [ItemsRequest(max_items=20, after=f"t{n}") for n in range(3)]
    for request in requests[:2]:
        currency.remember_answer(KEY, request, RECORD, reply(0, 20))
    # Used again: the first is now the most recent, and the second goes when the third
    # takes the items past the bound.
    assert currency.recent_answer(KEY, requests[0]) is not None
    currency.remember_answer(KEY, requests[2], RECORD, reply(0, 20))
    assert currency.recent_answer(KEY, requests[1]) is None
    assert currency.recent_answer(KEY, requests[0]) is not None
    assert currency.recent_answer(KEY, requests[2]) is not None
    # An answer larger than the bound is not kept at all.
    currency.remember_answer(KEY, ItemsRequest(), RECORD, reply(0, 51))
    assert currency.recent_answer(KEY, ItemsRequest()) is None
