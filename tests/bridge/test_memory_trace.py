"""``ROOST_MEMORY_TRACE``: snapshots of roostd's Python heap on SIGUSR1, for finding memory
that keeps growing; without it the daemon traces nothing."""

from __future__ import annotations

import signal
import tracemalloc
from pathlib import Path

from roost.service.memory_trace import MemoryFigures
from tests.fixtures.dbus import RoostdLauncher

# A loaded machine: a traced daemon runs several times slower than usual.
WAIT = 60.0


def test_sigusr1_writes_snapshots_and_logs_what_grew(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    daemon = roostd_launcher.start(env={"ROOST_MEMORY_TRACE": str(traces)})
    assert "memory trace on" in daemon.log_text()
    for n in (1, 2):
        daemon.process.send_signal(signal.SIGUSR1)
        daemon.wait_for_log("memory snapshot ", n, timeout=WAIT)
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


def test_each_snapshot_logs_who_holds_the_memory(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    daemon = roostd_launcher.start(env={"ROOST_MEMORY_TRACE": str(tmp_path / "traces")})
    daemon.process.send_signal(signal.SIGUSR1)
    line = next(
        line
        for line in daemon.wait_for_log("memory snapshot ", 1, timeout=WAIT).splitlines()
        if "memory snapshot " in line
    )
    figures = figures_in(line)
    assert set(figures) == {"resident", "heap_in_use", "heap_free", "database", "python_traced"}
    # The parts are within the whole; the traced heap is in glibc's (PYTHONMALLOC=malloc).
    assert 0 < figures["database"] < figures["resident"]
    assert 0 < figures["python_traced"] < figures["heap_in_use"]
    assert daemon.terminate() == 0


def test_without_frames_only_the_figures_are_logged(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    daemon = roostd_launcher.start(
        env={"ROOST_MEMORY_TRACE": str(traces), "ROOST_MEMORY_TRACE_FRAMES": "0"}
    )
    for n in (1, 2):
        daemon.process.send_signal(signal.SIGUSR1)
        daemon.wait_for_log(f"memory figures {n}: ", 1, timeout=WAIT)
    lines = [line for line in daemon.log_text().splitlines() if "memory figures 2:" in line]
    assert set(figures_in(lines[0])) == {"resident", "heap_in_use", "heap_free", "database"}
    assert not traces.exists()
    assert "memory snapshot" not in daemon.log_text()
    assert daemon.terminate() == 0


def figures_in(line: str) -> dict[str, float]:
    """The MiB figures a memory line logs, by field."""
    figures = MemoryFigures.from_description(line.split(": ", 2)[-1])
    return {name: value / 2**20 for name, value in vars(figures).items() if value is not None}
