"""The heap is trimmed once after syncs end, and not for anything else."""

from __future__ import annotations

import asyncio

import pytest

from roost.service.events import EventHub, SyncProgress, SyncStateChanged
from roost.service.heap_trim import HeapTrimmer


def watched(trimmer: HeapTrimmer) -> asyncio.Queue[int]:
    """A queue that receives the trim count after each trim."""
    done: asyncio.Queue[int] = asyncio.Queue()
    trim = trimmer.trim

    def counted() -> None:
        trim()
        done.put_nowait(trimmer.trims)

    trimmer.trim = counted  # type: ignore[method-assign]
    return done


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
