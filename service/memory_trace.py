"""A memory trace for finding what holds the daemon's memory, off unless asked for.

Set ``ROOST_MEMORY_TRACE`` in the daemon's environment to a directory: ``tracemalloc``
then records where every Python allocation was made (``ROOST_MEMORY_TRACE_FRAMES``
frames of each, 10 by default), and each ``SIGUSR1`` writes a snapshot there
(``roostd-<pid>-<n>.tracemalloc``, loadable with :meth:`tracemalloc.Snapshot.load`) and
logs the places whose memory grew most since the previous one. Compare two snapshots
taken minutes apart under a steady load to find memory that keeps growing.

Tracing costs: every allocation is recorded, which makes the daemon several times slower
and larger. It is for a developer's machine, never for a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)

MEMORY_TRACE_ENV = "ROOST_MEMORY_TRACE"
MEMORY_TRACE_FRAMES_ENV = "ROOST_MEMORY_TRACE_FRAMES"
DEFAULT_FRAMES = 10
#: Places logged at each snapshot.
TOP_PLACES = 15


class MemoryTrace:
    """Snapshots of the Python heap on ``SIGUSR1``, into ``directory``.

    Args:
        directory: where the snapshots go (created if missing).
        frames: how many frames of each allocation's traceback are kept.
    """

    def __init__(self, directory: Path, frames: int = DEFAULT_FRAMES) -> None:
        self.directory = directory
        self.frames = frames
        self.taken = 0
        self._previous: tracemalloc.Snapshot | None = None

    @classmethod
    def from_environment(cls) -> MemoryTrace | None:
        """The trace ``ROOST_MEMORY_TRACE`` asks for, None when it is not set."""
        raw = os.environ.get(MEMORY_TRACE_ENV, "").strip()
        if not raw:
            return None
        frames = DEFAULT_FRAMES
        raw_frames = os.environ.get(MEMORY_TRACE_FRAMES_ENV, "").strip()
        if raw_frames:
            try:
                frames = max(1, int(raw_frames))
            except ValueError:
                log.warning(
                    "%s=%r is not a number of frames; %d kept",
                    MEMORY_TRACE_FRAMES_ENV,
                    raw_frames,
                    DEFAULT_FRAMES,
                )
        return cls(Path(raw), frames)

    def start(self) -> None:
        """Start tracing, and take a snapshot at each ``SIGUSR1`` from now on."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tracemalloc.start(self.frames)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.snapshot)
        log.warning(
            "memory trace on (%d frames): SIGUSR1 writes a snapshot to %s; the daemon runs"
            " slower meanwhile",
            self.frames,
            self.directory,
        )

    def snapshot(self) -> Path:
        """Write a snapshot and log what grew most since the previous one."""
        taken = tracemalloc.take_snapshot()
        self.taken += 1
        path = self.directory / f"roostd-{os.getpid()}-{self.taken}.tracemalloc"
        taken.dump(str(path))
        if self._previous is not None:
            for stat in taken.compare_to(self._previous, "lineno")[:TOP_PLACES]:
                log.info(
                    "memory grew %+.1f KiB (%+d blocks) at %s",
                    stat.size_diff / 1024,
                    stat.count_diff,
                    stat.traceback,
                )
        self._previous = taken
        current, peak = tracemalloc.get_traced_memory()
        # Last, so that a reader of the log knows the comparison above is whole.
        log.info(
            "memory snapshot %s: %.1f MiB traced (peak %.1f MiB)",
            path,
            current / 2**20,
            peak / 2**20,
        )
        return path

    def stop(self) -> None:
        """Stop tracing."""
        with contextlib.suppress(RuntimeError):  # no loop running any more
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        tracemalloc.stop()
