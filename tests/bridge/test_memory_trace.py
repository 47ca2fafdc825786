"""``ROOST_MEMORY_TRACE``: snapshots of roostd's Python heap on SIGUSR1, for finding memory
that keeps growing; without it the daemon traces nothing."""

from __future__ import annotations

import signal
import time
import tracemalloc
from pathlib import Path

from tests.fixtures.dbus import Roostd, RoostdLauncher

# A loaded machine: a traced daemon runs several times slower than usual.
WAIT = 60.0


def wait_for_log(daemon: Roostd, text: str, count: int) -> str:
    """The daemon's log once ``text`` is in it ``count`` times (or fail after WAIT)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        log = daemon.log_text()
        if log.count(text) >= count:
            return log
        assert daemon.process.poll() is None, f"roostd exited:\n{log}"
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged {count} times:\n{daemon.log_text()}")


def test_sigusr1_writes_snapshots_and_logs_what_grew(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    daemon = roostd_launcher.start(env={"ROOST_MEMORY_TRACE": str(traces)})
    assert "memory trace on" in daemon.log_text()
    for n in (1, 2):
        daemon.process.send_signal(signal.SIGUSR1)
        wait_for_log(daemon, "memory snapshot ", n)
    snapshots = sorted(traces.glob("roostd-*.tracemalloc"))
    assert [p.name.rsplit("-", 1)[1] for p in snapshots] == ["1.tracemalloc", "2.tracemalloc"]
    assert traces.stat().st_mode & 0o077 == 0
    # A real heap, traced from the start: Roost's own modules allocated in it.
    heap = tracemalloc.Snapshot.load(str(snapshots[0]))
    files = {frame.filename for trace in heap.traces for frame in trace.traceback}
    assert any(f.endswith(("storage/database.py", "service/backend.py")) for f in files)
    # The second snapshot is compared with the first.
    assert "memory grew" in daemon.log_text()
    assert daemon.terminate() == 0


def test_without_the_variable_nothing_is_traced(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    assert "memory trace" not in daemon.log_text()
    assert daemon.terminate() == 0
