"""The order a service answers items asked by id in, learnt from its answers.

XEP-0060 gives an answer by ids no order. Prosody 0.12 answers in the order asked;
ejabberd in its node's (it reads the node and keeps the items named). Roost answers in
the node's order on every server, which the node's item listing (disco#items) gives; but
on ejabberd the listing costs more than the items themselves (docs/performance.md,
"Server reads"), and it tells nothing a service answering in node order has not said.
So the listing is asked beside the items until the service's answers have shown, in
answers that could tell it, that they come in node order; from then on the answer is
taken in the order it came.

An answer can tell only when the order asked was neither the node's nor its reverse,
and it held every item once, each named by the listing asked with it (an item published
between the two would read as out of order). One answer in neither order settles it
the other way for good: a service that answers as asked is never trusted to order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

#: How many items, over the answers that could tell, must have come in one node order
#: (and none in another) before it is trusted. A service answering in an order of its
#: own would put that many in node order by chance once in 40,320 (8!).
EVIDENCE_ITEMS = 8


class AnswerOrder(enum.Enum):
    """The order of a service's by-id answers."""

    OLDEST_FIRST = "oldest first, as the node holds them"
    NEWEST_FIRST = "newest first, the node's order reversed"
    NOT_NODE_ORDER = "not the node's order"


class ByIdAnswerOrder:
    """Learns, per service, whether its answers by id come in the node's order."""

    def __init__(self) -> None:
        self._known: dict[str, AnswerOrder] = {}
        # The order the answers that could tell showed so far, and how many items.
        self._evidence: dict[str, tuple[AnswerOrder, int]] = {}

    def known(self, service: str) -> AnswerOrder | None:
        """The order ``service`` answers by id in; None while it is not known."""
        return self._known.get(service)

    def observe(
        self, service: str, asked: Sequence[str], answered: list[str], node_order: list[str]
    ) -> None:
        """Take in one answer: ``asked``, the ids as the request named them;
        ``answered``, the answer's ids as they came; ``node_order``, the same ids in the
        node's order (oldest first) from the listing asked beside them."""
        if service in self._known:
            return
        found = set(answered)
        if len(answered) < 2 or len(found) != len(answered) or set(node_order) != found:
            return
        in_asked_order = [i for i in dict.fromkeys(asked) if i in found]
        newest_first = node_order[::-1]
        if in_asked_order in (node_order, newest_first):
            return
        if answered == node_order:
            order = AnswerOrder.OLDEST_FIRST
        elif answered == newest_first:
            order = AnswerOrder.NEWEST_FIRST
        else:
            self._known[service] = AnswerOrder.NOT_NODE_ORDER
            return
        seen, items = self._evidence.get(service, (order, 0))
        if seen is not order:
            self._known[service] = AnswerOrder.NOT_NODE_ORDER
            return
        items += len(answered)
        if items >= EVIDENCE_ITEMS:
            self._known[service] = order
            self._evidence.pop(service, None)
        else:
            self._evidence[service] = (order, items)
