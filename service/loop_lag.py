"""A probe of the event loop's lag, to find what holds the loop up.

Off unless ``ROOST_LOOP_LAG_MS`` is in the daemon's environment: its value is the stall,
in milliseconds, worth reporting (``ROOST_LOOP_LAG_MS=50``). Then:

* a task on the loop wakes every :data:`TICK` seconds and measures how late it woke;
  every :data:`REPORT_EVERY` seconds it logs the largest lag seen meanwhile, and it logs
  each stall of at least the threshold when the loop is back;
* a thread watches the task's heartbeat and, while the loop is stalled, samples the
  loop thread's stack (every half threshold, a few samples a stall): the stall's log
  line says what the loop was running, which is what makes the probe worth having;
* the garbage collector's passes are timed (``gc.callbacks``): a stall's line says how
  much of it was collecting, and in which generation, since a collection stops every
  thread wherever it happens to allocate.

Its lines are warnings, so that they show at the daemon's usual log level; the probe
costs a wake-up of the loop every 10 ms and one of the thread every half threshold.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

LOOP_LAG_ENV = "ROOST_LOOP_LAG_MS"
# How often the loop's task wakes (seconds).
TICK = 0.01
# How often the largest lag is logged (seconds).
REPORT_EVERY = 5.0
# Stack samples kept for one stall, and the frames shown of each.
SAMPLES_PER_STALL = 4
FRAMES_SHOWN = 8


class LoopLagProbe:
    """Measures the running loop's lag and names what a stall was running.

    Args:
        threshold: the stall worth a log line of its own, in seconds.
        tick: how often the loop's task wakes.
        report_every: how often the largest lag is logged.
    """

    def __init__(
        self, threshold: float, *, tick: float = TICK, report_every: float = REPORT_EVERY
    ) -> None:
        self.threshold = threshold
        self._tick = tick
        self._report_every = report_every
        self._beat: float | None = None
        # Stack samples of the stall that began at the heartbeat they are keyed by.
        self._samples: dict[float, list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.max_lag = 0.0
        # Time spent collecting, in total and per generation, and when a pass began.
        self._gc_seconds = [0.0, 0.0, 0.0]
        self._gc_longest = [0.0, 0.0, 0.0]
        self._gc_started = 0.0

    @classmethod
    def from_environment(cls) -> LoopLagProbe | None:
        """The probe ``ROOST_LOOP_LAG_MS`` asks for, None when it is not set."""
        raw = os.environ.get(LOOP_LAG_ENV, "").strip()
        if not raw:
            return None
        try:
            threshold_ms = float(raw)
        except ValueError:
            log.warning("%s=%r is not a number of milliseconds; no probe", LOOP_LAG_ENV, raw)
            return None
        return cls(max(threshold_ms, 1.0) / 1000)

    def start(self) -> None:
        """Start measuring the running loop."""
        loop_thread = threading.get_ident()
        self._task = asyncio.get_running_loop().create_task(self._measure(), name="loop lag")
        self._thread = threading.Thread(
            target=self._watch, args=(loop_thread,), name="loop lag watch", daemon=True
        )
        self._thread.start()
        gc.callbacks.append(self._on_gc)
        log.warning(
            "event loop lag probe on: stalls of %.0f ms or more are logged", self.threshold * 1000
        )

    async def stop(self) -> None:
        """Stop measuring."""
        self._stop.set()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def _measure(self) -> None:
        window_start, window_max, ticks = time.monotonic(), 0.0, 0
        while True:
            beat = self._beat = time.monotonic()
            collecting, running = list(self._gc_seconds), time.thread_time()
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            lag = max(now - beat - self._tick, 0.0)
            with self._lock:
                samples = self._samples.pop(beat, None)
            self.max_lag = max(self.max_lag, lag)
            window_max = max(window_max, lag)
            ticks += 1
            if lag >= self.threshold:
                # On the CPU: the loop's own work; the rest it waited (for the GIL, or
                # for a CPU the machine did not give it).
                spent = [a - b for a, b in zip(self._gc_seconds, collecting, strict=True)]
                log.warning(
                    "event loop stalled %.0f ms (loop thread on the CPU %.0f ms, collecting "
                    "%.0f ms)%s",
                    lag * 1000,
                    (time.thread_time() - running) * 1000,
                    sum(spent) * 1000,
                    "; running: " + " | ".join(samples) if samples else "",
                )
            if now - window_start >= self._report_every:
                longest, self._gc_longest = self._gc_longest, [0.0, 0.0, 0.0]
                log.warning(
                    "event loop lag: max %.1f ms over %.1f s (%d ticks); longest collection "
                    "of generation 0/1/2: %.0f/%.0f/%.0f ms",
                    window_max * 1000,
                    now - window_start,
                    ticks,
                    *(seconds * 1000 for seconds in longest),
                )
                window_start, window_max, ticks = now, 0.0, 0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.monotonic()
        elif self._gc_started:
            seconds = time.monotonic() - self._gc_started
            generation = info["generation"]
            self._gc_seconds[generation] += seconds
            self._gc_longest[generation] = max(self._gc_longest[generation], seconds)
            self._gc_started = 0.0

    def _watch(self, loop_thread: int) -> None:
        """Sample the loop thread's stack while its heartbeat is late."""
        while not self._stop.wait(self.threshold / 2):
            beat = self._beat
            if beat is None or time.monotonic() - beat - self._tick < self.threshold / 2:
                continue
            frame = sys._current_frames().get(loop_thread)
            sample = describe(frame)
            del frame
            with self._lock:
                if beat != self._beat:
                    continue  # the loop came back meanwhile
                samples = self._samples.setdefault(beat, [])
                if len(samples) < SAMPLES_PER_STALL:
                    samples.append(sample)
                # Stalls the loop never came back from (a closing daemon) are not kept.
                for old in [b for b in self._samples if b < beat]:
                    del self._samples[old]


def describe(frame: FrameType | None) -> str:
    """The innermost :data:`FRAMES_SHOWN` frames of a stack, innermost first:
    ``module.function:line < caller…``."""
    shown: list[str] = []
    while frame is not None and len(shown) < FRAMES_SHOWN:
        module = frame.f_globals.get("__name__", "?")
        shown.append(f"{module}.{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(shown)
