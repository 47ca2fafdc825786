"""Two requests run at once: both answers, or the first failure and nothing left running."""

from __future__ import annotations

import asyncio

import pytest

from roost.service.concurrently import both
from roost.service.errors import XmppError


async def test_two_requests_together_give_both_answers_or_the_first_failure() -> None:
    async def answer(value: int, after: float) -> int:
        await asyncio.sleep(after)
        return value

    async def fail(condition: str, after: float) -> int:
        await asyncio.sleep(after)
        raise XmppError(condition)

    assert await both(answer(1, 0.01), answer(2, 0)) == (1, 2)
    slow = asyncio.ensure_future(answer(3, 10))
    with pytest.raises(XmppError) as first:
        await both(slow, fail("forbidden", 0))
    # The other request is not left running.
    assert slow.cancelled()
    assert first.value.condition == "forbidden"
    # Both fail: the one that failed first.
    with pytest.raises(XmppError) as failed:
        await both(fail("item-not-found", 0.05), fail("forbidden", 0))
    assert failed.value.condition == "forbidden"
