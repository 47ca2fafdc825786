"""A memory trace for finding what holds the daemon's memory, off unless asked for.

Set ``ROOST_MEMORY_TRACE`` in the daemon's environment to a directory: ``tracemalloc``
then records where every Python allocation was made (``ROOST_MEMORY_TRACE_FRAMES``
frames of each, 10 by default), and each ``SIGUSR1`` writes a snapshot there
(``roostd-<pid>-<n>.tracemalloc``, loadable with :meth:`tracemalloc.Snapshot.load`) and
logs the places whose memory grew most since the previous one. Compare two snapshots
taken minutes apart under a steady load to find memory that keeps growing.

Each ``SIGUSR1`` also logs where the resident set is, by who holds it
(:class:`MemoryFigures`): glibc's heap, in use and free; the database
library's own memory (SQLite's page caches and statements); the traced Python heap. A
resident set that grows while the Python heap does not is then told apart: the
database library, or free memory the heap keeps (fragmentation).

Tracing costs: every allocation is recorded, which makes the daemon several times slower
and larger. It is for a developer's machine, never for a deployment. With
``ROOST_MEMORY_TRACE_FRAMES=0`` nothing is traced and no snapshot written: each
``SIGUSR1`` logs the figures only, at no cost to the daemon's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.service.launch import glibc_function

log = logging.getLogger(__name__)

MEMORY_TRACE_ENV = "ROOST_MEMORY_TRACE"
MEMORY_TRACE_FRAMES_ENV = "ROOST_MEMORY_TRACE_FRAMES"
DEFAULT_FRAMES = 10
#: Places logged at each snapshot.
TOP_PLACES = 15


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (<malloc.h>, glibc 2.33 and later), every arena summed.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_mallinfo2 = glibc_function("mallinfo2", [], _MallInfo2)


def heap_usage() -> tuple[int, int] | None:
    """(bytes in use, bytes free) of glibc's heap, its own mappings for large blocks
    counted in use, a free block counted whether a trim gave its pages back or not;
    None on another C library (or a glibc before 2.33)."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


@dataclass(frozen=True)
class MemoryFigures:
    """Where the daemon's memory is, in bytes; None for what cannot be told here.

    Attributes:
        resident: the resident set (``VmRSS``).
        heap_in_use: glibc's blocks in use, its own mappings for large blocks included
            (Python's objects, with ``PYTHONMALLOC=malloc``, and the C libraries').
        heap_free: glibc's free blocks among those in use (resident unless their pages
            were given back by a trim: glibc counts them free either way).
        database: the database library's own (see ``Database.client_memory``).
        python_traced: the Python heap ``tracemalloc`` counts, when it traces.
    """

    resident: int | None
    heap_in_use: int | None
    heap_free: int | None
    database: int | None
    python_traced: int | None

    @classmethod
    def now(cls, database: Callable[[], int | None] | None = None) -> MemoryFigures:
        """The figures as they are, ``database`` telling the database library's."""
        heap = heap_usage()
        heap_in_use, heap_free = heap if heap is not None else (None, None)
        return cls(
            resident=_resident(),
            heap_in_use=heap_in_use,
            heap_free=heap_free,
            database=database() if database is not None else None,
            python_traced=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        )

    def describe(self) -> str:
        """The figures in MiB, for the log (:meth:`from_description` reads them back)."""
        return ", ".join(
            f"{label} {value / 2**20:.1f} MiB"
            for label, field in _LABELS.items()
            if (value := getattr(self, field)) is not None
        )

    @classmethod
    def from_description(cls, text: str) -> MemoryFigures:
        """The figures a log line written by :meth:`describe` holds (to 0.1 MiB)."""
        found = {
            _LABELS[label]: round(float(mib) * 2**20)
            for label, mib in re.findall(r"([A-Za-z][A-Za-z ,]*?) (\d+\.\d) MiB", text)
            if label in _LABELS
        }
        return cls(**{field: found.get(field) for field in _LABELS.values()})


# The log's words for each figure.
_LABELS = {
    "resident": "resident",
    "heap in use": "heap_in_use",
    "heap free": "heap_free",
    "database library": "database",
    "Python heap traced": "python_traced",
}


def _resident() -> int | None:
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class MemoryTrace:
    """Snapshots of the Python heap on ``SIGUSR1``, into ``directory``, and the memory
    figures (:class:`MemoryFigures`) in the log.

    Args:
        directory: where the snapshots go (created if missing).
        frames: how many frames of each allocation's traceback are kept; 0 traces
            nothing and writes no snapshot (the figures only).
    """

    def __init__(self, directory: Path, frames: int = DEFAULT_FRAMES) -> None:
        self.directory = directory
        self.frames = frames
        self.taken = 0
        self._previous: tracemalloc.Snapshot | None = None
        self._database: Callable[[], int | None] | None = None

    def watch_database(self, client_memory: Callable[[], int | None]) -> None:
        """Include the database library's memory, as ``client_memory`` tells it, in
        the figures."""
        self._database = client_memory

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
                frames = max(0, int(raw_frames))
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
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.snapshot)
        if not self.frames:
            log.warning("memory figures on: SIGUSR1 logs them (the Python heap not traced)")
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tracemalloc.start(self.frames)
        log.warning(
            "memory trace on (%d frames): SIGUSR1 writes a snapshot to %s; the daemon runs"
            " slower meanwhile",
            self.frames,
            self.directory,
        )

    def snapshot(self) -> Path | None:
        """Write a snapshot (when tracing) and log what grew most since the previous
        one, then the memory figures; the snapshot's file."""
        if not tracemalloc.is_tracing():
            self.taken += 1
            log.info("memory figures %d: %s", self.taken, self.figures().describe())
            return None
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
        # Last, so that a reader of the log knows the comparison above is whole.
        log.info(
            "memory snapshot %s: %s (traced peak %.1f MiB)",
            path,
            self.figures().describe(),
            tracemalloc.get_traced_memory()[1] / 2**20,
        )
        return path

    def figures(self) -> MemoryFigures:
        """The memory figures now."""
        return MemoryFigures.now(self._database)

    def stop(self) -> None:
        """Stop tracing."""
        with contextlib.suppress(RuntimeError):  # no loop running any more
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        tracemalloc.stop()
