"""How fast this machine runs Python now: the yardstick `make bench` prints first and last.

The figures in milliseconds, items per second and calls per second move with the machine
and with whatever else it runs, which is why each benchmark measures its baseline in the
same run and its targets are ratios where it can. A run's absolute figures still need a
yardstick to be read beside another run's: this one times a fixed pure-Python workload
(ten million integer additions: the interpreter alone, no I/O, no allocation beyond
small integers), the kind of work that dominates roostd's CPU time. Two runs whose
yardsticks differ by 3x can be expected to differ about as much in any CPU-bound figure.

``python machine.py start`` (or ``end``) prints the figures as JSON lines; ``bench/report.py``
states them under its table.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit

ADDITIONS = 10_000_000
ROUNDS = 3


def python_loop_seconds() -> float:
    """The median time of :data:`ROUNDS` loops of :data:`ADDITIONS` integer additions."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        total = 0
        for n in range(ADDITIONS):
            total += n
        times.append(time.perf_counter() - started)
        assert total == ADDITIONS * (ADDITIONS - 1) // 2
    return statistics.median(times)


def main() -> None:
    """Print the yardstick's figures for the phase named on the command line."""
    phase = sys.argv[1] if len(sys.argv) > 1 else "start"
    seconds = python_loop_seconds()
    load_1m, _load_5m, _load_15m = os.getloadavg()
    emit("machine", f"python_loop_10M_{phase}", seconds, "s", samples=ROUNDS)
    emit("machine", f"load_average_1m_{phase}", load_1m, "runnable", cpus=os.cpu_count())


if __name__ == "__main__":
    main()
