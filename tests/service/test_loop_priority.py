"""Worker threads step aside while the event loop's thread has work, within a bound."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from roost.service.loop_priority import LoopPriority


class Worker:
    """A thread doing what a sync's worker does between two items: step aside, then
    work; it counts the items it began while the loop was marked busy by the test."""

    def __init__(self, priority: LoopPriority) -> None:
        self.priority = priority
        self.loop_busy = False
        self.items = 0
        self.items_while_loop_busy = 0
        #: Set once the worker has done 100 items.
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.priority.step_aside()
            self.items += 1
            if self.items == 100:
                self.started.set()
            if self.loop_busy:
                self.items_while_loop_busy += 1

    def __enter__(self) -> Worker:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_on_priority_loop(priority: LoopPriority, main: Callable[[], object]) -> None:
    async def body() -> None:
        await main()  # type: ignore[misc]

    with asyncio.Runner(loop_factory=priority.loop_factory) as runner:
        runner.run(body())


def _busy_stretch(worker: Worker, seconds: float) -> None:
    # Python work on the loop's thread, which lets other threads have the GIL only at
    # the interpreter's switch interval.
    worker.loop_busy = True
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    worker.loop_busy = False


async def _started(worker: Worker) -> None:
    # The worker runs while the loop waits in its selector.
    await asyncio.to_thread(worker.started.wait)


def test_a_worker_waits_while_the_loop_is_busy() -> None:
    priority = LoopPriority(longest_wait=30.0)
    with Worker(priority) as worker:

        async def main() -> None:
            await _started(worker)
            for _ in range(5):
                _busy_stretch(worker, 0.03)
                await asyncio.sleep(0.005)

        _run_on_priority_loop(priority, main)
    # At most the item a worker had already begun when a busy stretch started, against
    # thousands in 150 ms of spinning without the priority (the test below).
    assert worker.items_while_loop_busy <= 5
    assert worker.items > 100


def test_without_the_priority_loop_a_worker_runs_beside_the_loop() -> None:
    priority = LoopPriority(longest_wait=30.0)
    with Worker(priority) as worker:

        async def main() -> None:
            await _started(worker)
            _busy_stretch(worker, 0.1)

        # A plain loop: the daemon's loop factory was never used.
        asyncio.run(main())
    assert worker.items_while_loop_busy > 100


def test_a_loop_busy_for_long_does_not_starve_a_worker() -> None:
    priority = LoopPriority(longest_wait=0.02, quantum=0.05)
    with Worker(priority) as worker:

        async def main() -> None:
            await _started(worker)
            _busy_stretch(worker, 0.5)

        _run_on_priority_loop(priority, main)
    assert worker.items_while_loop_busy > 0


def test_the_loops_own_thread_never_waits() -> None:
    priority = LoopPriority(longest_wait=30.0)
    took: list[float] = []

    async def main() -> None:
        # Called from a callback: the loop is busy, and this is its thread.
        started = time.monotonic()
        priority.step_aside()
        took.append(time.monotonic() - started)

    _run_on_priority_loop(priority, main)
    assert took[0] < 15.0


def test_no_worker_waits_for_a_loop_that_has_closed() -> None:
    priority = LoopPriority(longest_wait=30.0)

    async def main() -> None:
        pass

    _run_on_priority_loop(priority, main)
    took: list[float] = []

    def worker() -> None:
        started = time.monotonic()
        priority.step_aside()
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert took[0] < 15.0
