"""Store calls that finish their transaction when their caller is cancelled.

With aiosqlite, a statement runs in the connection's own thread. Cancelling the
coroutine that awaits it does not stop it, and SQLAlchemy then drops the connection
with its transaction still open: SQLite's write lock stays held until the connection is
garbage-collected, and the next writer waits out the busy timeout and fails with
"database is locked". Syncs are cancelled routinely (a disconnection, a node deleted,
shutdown), so every store call runs in its own task, shielded: a cancelled caller
waits for the call to commit or roll back, then sees its cancellation.

A read handed whole to a :class:`~roost.storage.reads.ReadRunner` needs no such task
(:func:`completes_by_itself`): on an SQLite file it runs either at once, with no point at
which its caller could be cancelled, or on a reader thread, where it ends its transaction
whatever its caller does; elsewhere the runner shields it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
_Class = TypeVar("_Class", bound=type)
_M = TypeVar("_M", bound=Callable[..., Any])
_BY_ITSELF = "__roost_completes_by_itself__"


def completes_on_cancel(method: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    """Wrap a store coroutine method so that cancelling its caller lets it finish first."""

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> _T:
        task = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Whatever the call ends with is the cancelled caller's no longer: mark it
            # seen, so that a failure is not reported as "never retrieved".
            task.add_done_callback(_retrieve)
            if not task.done():
                await asyncio.wait([task])
            raise

    return call


def completes_by_itself(method: _M) -> _M:
    """Mark a store method that :func:`stores_complete_on_cancel` leaves as it is: its
    work is handed whole to a :class:`~roost.storage.reads.ReadRunner`, which finishes it
    (or shields it) whatever happens to the caller. A short read then costs no task."""
    setattr(method, _BY_ITSELF, True)
    return method


def stores_complete_on_cancel(cls: _Class) -> _Class:
    """Apply :func:`completes_on_cancel` to every public coroutine method of ``cls``,
    but those marked :func:`completes_by_itself`."""
    for name, member in list(vars(cls).items()):
        # Plain functions only: static helpers take the caller's session and must run in
        # the caller's task.
        if (
            not name.startswith("_")
            and inspect.isfunction(member)
            and inspect.iscoroutinefunction(member)
            and not getattr(member, _BY_ITSELF, False)
        ):
            setattr(cls, name, completes_on_cancel(member))
    return cls


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
