"""What a service's answers by id teach of their order, and what they must not."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from roost.service.pubsub.answer_order import EVIDENCE_ITEMS, AnswerOrder, ByIdAnswerOrder

NODE = [f"i{n:02d}" for n in range(30)]
SERVICE = "pubsub.example.org"


def node_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=NODE.index)


def test_answers_in_node_order_are_trusted_once_enough_items_showed_it() -> None:
    learner = ByIdAnswerOrder()
    asked = ["i07", "i02", "i05"]
    for _ in range(-(-EVIDENCE_ITEMS // 3) - 1):
        learner.observe(SERVICE, asked, node_order(asked), node_order(asked))
        assert learner.known(SERVICE) is None
    learner.observe(SERVICE, asked, node_order(asked), node_order(asked))
    assert learner.known(SERVICE) is AnswerOrder.OLDEST_FIRST
    # Settled: a later answer changes nothing.
    learner.observe(SERVICE, asked, asked, node_order(asked))
    assert learner.known(SERVICE) is AnswerOrder.OLDEST_FIRST


def test_answers_newest_first_are_trusted_reversed() -> None:
    learner = ByIdAnswerOrder()
    asked = ["i01", "i09", "i03", "i04", "i20", "i11", "i00", "i05"]
    ordered = node_order(asked)
    learner.observe(SERVICE, asked, ordered[::-1], ordered)
    assert learner.known(SERVICE) is AnswerOrder.NEWEST_FIRST


def test_an_answer_in_the_order_asked_settles_it_for_good() -> None:
    learner = ByIdAnswerOrder()
    asked = ["i07", "i02", "i05", "i09"]
    learner.observe(SERVICE, asked, asked, node_order(asked))
    assert learner.known(SERVICE) is AnswerOrder.NOT_NODE_ORDER
    for _ in range(10):
        learner.observe(SERVICE, asked, node_order(asked), node_order(asked))
    assert learner.known(SERVICE) is AnswerOrder.NOT_NODE_ORDER
    # Each service on its own.
    assert learner.known("other.example.org") is None


def test_answers_in_both_node_orders_settle_it_as_neither() -> None:
    learner = ByIdAnswerOrder()
    asked = ["i07", "i02", "i05"]
    ordered = node_order(asked)
    learner.observe(SERVICE, asked, ordered, ordered)
    learner.observe(SERVICE, asked, ordered[::-1], ordered)
    assert learner.known(SERVICE) is AnswerOrder.NOT_NODE_ORDER


def test_answers_that_cannot_tell_teach_nothing() -> None:
    learner = ByIdAnswerOrder()
    many = node_order(["i01", "i09", "i03", "i04", "i20", "i11", "i00", "i05", "i06"])
    for _ in range(5):
        # Asked in the node's order, or its reverse: an answer as asked looks the same.
        learner.observe(SERVICE, many, many, many)
        learner.observe(SERVICE, many[::-1], many[::-1], many)
        # One item; an item twice; an item the listing did not name (published since).
        learner.observe(SERVICE, ["i03", "i01"], ["i01"], ["i01"])
        learner.observe(SERVICE, many[::-1], [*many, "i01"], [*many, "i01"])
        learner.observe(SERVICE, [*many[::-1], "new"], [*many, "new"], many)
    assert learner.known(SERVICE) is None


@given(st.randoms(use_true_random=False))
def test_a_service_answering_in_an_order_of_its_own_is_not_trusted(chooser: random.Random) -> None:
    # The service orders its answers by a fixed permutation of the node unrelated to
    # it: until the learner settles, each answer that could tell must be taken for what
    # it is, and it never settles on a node order it has not seen in enough items.
    own = NODE[:]
    chooser.shuffle(own)
    learner = ByIdAnswerOrder()
    seen_in_node_order = 0
    for _ in range(20):
        asked = chooser.sample(NODE, chooser.randint(2, 6))
        answered = sorted(asked, key=own.index)
        ordered = node_order(asked)
        before = learner.known(SERVICE)
        learner.observe(SERVICE, asked, answered, ordered)
        if before is None and answered == ordered and asked not in (ordered, ordered[::-1]):
            seen_in_node_order += len(answered)
    known = learner.known(SERVICE)
    assert known is not AnswerOrder.OLDEST_FIRST or seen_in_node_order >= EVIDENCE_ITEMS
