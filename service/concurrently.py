"""Two awaitables run at once, with both results or the first failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

First = TypeVar("First")
Second = TypeVar("Second")


async def both(first: Awaitable[First], second: Awaitable[Second]) -> tuple[First, Second]:
    """Both results, the two asked at once; when one fails, the other is cancelled and
    the failure raised (a plain gather would leave it running, unawaited)."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        # Each outcome is taken, so that none is reported as never retrieved.
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure
    return tasks[0].result(), tasks[1].result()
