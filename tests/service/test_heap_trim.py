"""The heap is trimmed once after syncs end, and between syncs only when its free memory grew."""

from __future__ import annotations

import asyncio

import pytest

from roost.service.events import EventHub, SyncProgress, SyncStateChanged
from roost.service.heap_trim import HeapTrimmer, heap_usage


def reported(trimmer: HeapTrimmer, method: str, count: str) -> asyncio.Queue[int]:
    """A queue that receives ``trimmer``'s counter ``count`` after each call of its
    ``method``."""
    done: asyncio.Queue[int] = asyncio.Queue()
    original = getattr(trimmer, method)

    def counted() -> None:
        original()
        done.put_nowait(getattr(trimmer, count))

    setattr(trimmer, method, counted)
    return done


def watched(trimmer: HeapTrimmer) -> asyncio.Queue[int]:
    """A queue that receives the trim count after each trim."""
    return reported(trimmer, "trim", "trims")


def looked(trimmer: HeapTrimmer) -> asyncio.Queue[int]:
    """A queue that receives the count of steady trims after each look at the free heap."""
    return reported(trimmer, "_look_at_free_heap", "steady_trims")


async def test_syncs_ending_together_are_trimmed_after_once() -> None:
    hub = EventHub()
    trimmer = HeapTrimmer(hub, quiet_delay=0.05, min_interval=0.0)
    done = watched(trimmer)
    trimmer.start()
    try:
        hub.publish(SyncStateChanged("p", "s", "n1", "in_progress"))
        hub.publish(SyncProgress("p", "s", "n1", 10, 20))
        assert trimmer._timer is None  # nothing ended yet
        hub.publish(SyncStateChanged("p", "s", "n1", "completed"))
        hub.publish(SyncStateChanged("p", "s", "n2", "error"))
        assert await asyncio.wait_for(done.get(), 30) == 1
        assert done.empty() and trimmer._timer is None
    finally:
        trimmer.close()


@pytest.mark.parametrize("state", ["completed", "error", "no_sync", "none"])
async def test_every_final_state_schedules_a_trim(state: str) -> None:
    hub = EventHub()
    trimmer = HeapTrimmer(hub, quiet_delay=0.01, min_interval=0.0)
    done = watched(trimmer)
    trimmer.start()
    try:
        hub.publish(SyncStateChanged("p", "s", "n", state))
        assert await asyncio.wait_for(done.get(), 30) == 1
    finally:
        trimmer.close()


async def test_no_trim_while_a_sync_runs() -> None:
    hub = EventHub()
    trimmer = HeapTrimmer(hub, quiet_delay=0.01, min_interval=0.0)
    done = watched(trimmer)
    trimmer.start()
    try:
        hub.publish(SyncStateChanged("p", "s", "n1", "in_progress"))
        hub.publish(SyncStateChanged("p", "s", "n2", "in_progress"))
        hub.publish(SyncStateChanged("p", "s", "n1", "completed"))
        # n2 still syncs: its collection would hold the loop under the readers.
        assert trimmer._timer is None
        hub.publish(SyncStateChanged("p", "s", "n2", "completed"))
        assert trimmer._timer is not None
        # A sync beginning before the trim ran puts it off until that one ends too.
        hub.publish(SyncStateChanged("p", "s", "n3", "in_progress"))
        assert trimmer._timer is None
        hub.publish(SyncStateChanged("p", "s", "n3", "error"))
        assert await asyncio.wait_for(done.get(), 30) == 1
    finally:
        trimmer.close()


async def test_a_trim_waits_out_the_least_interval() -> None:
    hub = EventHub()
    trimmer = HeapTrimmer(hub, quiet_delay=0.0, min_interval=3600.0)
    trimmer.start()
    try:
        trimmer.trim()
        hub.publish(SyncStateChanged("p", "s", "n", "completed"))
        timer = trimmer._timer
        assert timer is not None
        # Not before an hour after the last trim.
        assert timer.when() - asyncio.get_running_loop().time() > 3500
    finally:
        trimmer.close()
    assert trimmer._timer is None
    # Closed: events no longer schedule anything.
    hub.publish(SyncStateChanged("p", "s", "n", "completed"))
    assert trimmer._timer is None and trimmer.trims == 1


needs_glibc = pytest.mark.skipif(heap_usage() is None, reason="glibc 2.33 or later only")


@needs_glibc
@pytest.mark.parametrize(
    ("limit", "syncing", "counts"),
    [
        # Any growth since the last trim passes a limit below zero: each look trims.
        (-1, False, [1, 2, 3]),
        (2**50, False, [0, 0, 0]),
        # A sync running is the full trim's.
        (-1, True, [0, 0, 0]),
    ],
    ids=["grown", "within-the-limit", "while-a-sync-runs"],
)
async def test_between_syncs_grown_free_heap_is_given_back(
    limit: int, syncing: bool, counts: list[int]
) -> None:
    hub = EventHub()
    trimmer = HeapTrimmer(hub, steady_every=0.01, steady_free_limit=limit)
    done = looked(trimmer)
    trimmer.start()
    try:
        if syncing:
            hub.publish(SyncStateChanged("p", "s", "n", "in_progress"))
        assert [await asyncio.wait_for(done.get(), 30) for _ in counts] == counts
    finally:
        trimmer.close()
    assert trimmer.trims == 0  # the full trim (with its collection) is not run for it
    assert trimmer._steady is None  # closed: no look planned any more
