"""Two requests run at once: both answers, or the first failure and nothing left running."""

from __future__ import annotations

import asyncio

import pytest

from roost.service.concurrently import both
from roost.service.errors import XmppError


async def test_two_requests_together_give_both_answers_or_the_first_failure() -> None:
    never = asyncio.Event()  # an answer that does not come while the test runs

    async def answer(value: int, after: asyncio.Event | None = None) -> int:
        if after is not None:
            await after.wait()
        return value

    async def fail(condition: str, after: asyncio.Event | None = None) -> int:
        if after is not None:
            await after.wait()
        raise XmppError(condition)

    # The second answers first, the first once it has: both, in the order asked.
    second_done = asyncio.Event()

    async def second() -> int:
        second_done.set()
        return 2

    assert await both(answer(1, second_done), second()) == (1, 2)
    slow = asyncio.ensure_future(answer(3, never))
    with pytest.raises(XmppError) as first:
        await both(slow, fail("forbidden"))
    # The other request is not left running.
    assert slow.cancelled()
    assert first.value.condition == "forbidden"
    # The other would fail later: the failure raised is the first, the other cancelled.
    late = asyncio.ensure_future(fail("item-not-found", never))
    with pytest.raises(XmppError) as failed:
        await both(late, fail("forbidden"))
    assert failed.value.condition == "forbidden" and late.cancelled()
