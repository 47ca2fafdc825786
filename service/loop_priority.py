"""The event loop's thread first: worker threads step aside while it has work.

Everything a D-Bus caller waits for runs on the event loop's thread, and the daemon's
worker threads (a sync's items serialised and parsed) run Python beside it, under the
same GIL. Whenever the loop's thread lets the GIL go, for a socket call or each step of
an SQLite statement, a worker takes it, and the loop's thread gets it back only when the
worker is made to let go, a switch interval later at best, much later when the kernel
has descheduled the worker meanwhile (two cores shared with the XMPP server and the
bus): reads waited 60-90 ms behind a sync while their own work took 2-7 ms.

So the loop marks when it is idle (its selector about to wait for I/O or a timer), and a
worker checks between two items (:meth:`LoopPriority.step_aside`): while the loop is
busy, the worker waits for it to be idle again. Under the GIL the two never ran in
parallel anyway, so a sync loses little: its workers run while the loop waits for the
network. A loop busy for long (a burst of calls) does not starve them either: a worker
waits at most :data:`LONGEST_WAIT`, then runs freely for :data:`QUANTUM` before it steps
aside again.

Only a loop built with :meth:`LoopPriority.loop_factory` marks its idleness; until one
runs, :meth:`step_aside` returns at once (tests, the CLI, a daemon embedded elsewhere).
"""

from __future__ import annotations

import asyncio
import selectors
import threading
import time
from typing import Any

#: The longest a worker waits for the loop to be idle, in seconds.
LONGEST_WAIT = 0.05
#: How long a worker that waited :data:`LONGEST_WAIT` then runs without stepping aside.
QUANTUM = 0.01


class LoopPriority:
    """Lets worker threads wait while the event loop's thread has work to do."""

    def __init__(self, longest_wait: float = LONGEST_WAIT, quantum: float = QUANTUM) -> None:
        self._idle = threading.Event()
        self._active = False
        self._longest_wait = longest_wait
        self._quantum = quantum
        self._local = threading.local()
        self._loop_thread: int | None = None

    def loop_factory(self) -> asyncio.AbstractEventLoop:
        """A new event loop that marks when it is idle, for ``asyncio.Runner``."""
        self._active = True
        self._loop_thread = threading.get_ident()
        return asyncio.SelectorEventLoop(_IdleMarkingSelector(self._idle))

    def step_aside(self) -> None:
        """Called by a worker thread between two pieces of its work: wait while the
        loop's thread is busy (at most :data:`LONGEST_WAIT`)."""
        if not self._active or self._idle.is_set():
            return
        if threading.get_ident() == self._loop_thread:
            # The loop's own work never waits for the loop.
            return
        local = self._local
        if time.monotonic() < getattr(local, "free_until", 0.0):
            return
        if not self._idle.wait(self._longest_wait):
            local.free_until = time.monotonic() + self._quantum


class _IdleMarkingSelector(selectors.DefaultSelector):
    """The platform's selector, with ``idle`` set while a ``select`` waits."""

    def __init__(self, idle: threading.Event) -> None:
        super().__init__()
        self._idle_event = idle

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout <= 0:
            # The loop has callbacks ready: it polls and goes on working.
            return super().select(timeout)
        self._idle_event.set()
        try:
            return super().select(timeout)
        finally:
            self._idle_event.clear()

    def close(self) -> None:
        # The loop is closing and will have no more work: no worker waits for it.
        super().close()
        self._idle_event.set()


#: The daemon's one: the GIL it arbitrates is the process's.
LOOP_PRIORITY = LoopPriority()
