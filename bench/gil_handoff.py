"""GIL hand-off benchmark: a database read on the event loop's thread beside a busy thread.

Prints one JSON object a line through ``bench/figures.py``; progress goes to stderr.

A short read (a page of 20 items) runs on the event loop's thread, and SQLite's driver
lets the GIL go for each step of a statement: each row of a page, the ``BEGIN``, the
``ROLLBACK``. When another thread of the daemon runs Python meanwhile (a sync's items
being parsed in a worker thread), every one of those steps gives it the GIL, and the
loop's thread waits for it back until the interpreter's switch interval has passed
(5 ms by default): a page of 20 rows waited about twenty times over.

Each run is a process of its own (``--interval``), as ``roostd`` is: the item store on
a new SQLite file made by the migrations, one node of 1,000 blog posts of the database
reads bench's size (about 1.5 KB of Atom), and the newest 20 items read through
``ItemStore.get_items`` 400 times, with nothing else running (idle) and while a thread
parses and serialises Atom entries as a sync's worker does (busy). Figures: the busy
p99 at ``roostd``'s switch interval (:data:`roost.service.daemon.GIL_SWITCH_INTERVAL`)
against the same at the interpreter's default, in the same run; the idle p99 at each
interval is reported beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.db_reads import post
from bench.figures import emit, progress, spread, upper
from roost.service.daemon import GIL_SWITCH_INTERVAL
from roost.storage import Database, ItemInput

BENCH = "gil_handoff"
DEFAULT_INTERVAL = 0.005
ITEMS = 1_000
READS = 400
# roostd's busy p99 against the interpreter default's, at most.
TARGET_RATIO = 0.2


class BusyWorker:
    """A thread doing what a sync's worker thread does: parse items, serialise them."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy worker", daemon=True)
        self.rounds = 0

    def _run(self) -> None:
        entries = [post(n) for n in range(50)]
        while not self._stop.is_set():
            for text in entries:
                ET.tostring(ET.fromstring(text))
            self.rounds += 1

    def __enter__(self) -> BusyWorker:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def timed_reads(db: Database, node_id: int) -> list[float]:
    """Milliseconds of each of READS reads of the node's newest 20."""
    times = []
    for _ in range(READS):
        started = time.perf_counter()
        page = await db.items.get_items(node_id, max_items=20)
        times.append((time.perf_counter() - started) * 1000)
        if len(page.items) != 20:
            raise SystemExit(f"a page held {len(page.items)} items, not 20")
    return times


async def one_interval(interval: float) -> dict[str, list[float]]:
    """The reads' times, idle and beside a busy thread, at ``interval``."""
    sys.setswitchinterval(interval)
    with tempfile.TemporaryDirectory(prefix="roost-bench-gil-") as directory:
        db = await Database.open(f"sqlite+aiosqlite:///{Path(directory) / 'roost.db'}")
        try:
            await db.profiles.create_profile("alice", "alice@localhost", "x")
            node = await db.nodes.get_or_create_node("alice", "pubsub.localhost", "blog")
            items = [
                ItemInput(
                    f"p{n:06d}",
                    "alice@localhost",
                    f"<item xmlns='http://jabber.org/protocol/pubsub' id='p{n:06d}'>"
                    f"{post(n)}</item>",
                    None,
                    "",
                )
                for n in range(ITEMS)
            ]
            await db.items.upsert_items(node.id, items)
            stored = await db.items.count_items(node.id)
            if stored != ITEMS:
                raise SystemExit(f"the node holds {stored} items, not {ITEMS}")
            await timed_reads(db, node.id)  # warm: statements compiled, pages cached
            idle = await timed_reads(db, node.id)
            with BusyWorker() as worker:
                busy = await timed_reads(db, node.id)
            if worker.rounds == 0:
                raise SystemExit("the busy thread never ran")
        finally:
            await db.close()
    return {"idle": idle, "busy": busy}


def measured(interval: float) -> dict[str, list[float]]:
    """Run one interval in a process of its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--interval", repr(interval)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, list[float]] = json.loads(out)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, help="measure one switch interval (s)")
    options = parser.parse_args()
    if options.interval is not None:
        print(json.dumps(asyncio.run(one_interval(options.interval))))
        return
    progress(BENCH, f"the interpreter's default interval, {DEFAULT_INTERVAL * 1000:g} ms")
    default = measured(DEFAULT_INTERVAL)
    progress(BENCH, f"roostd's interval, {GIL_SWITCH_INTERVAL * 1000:g} ms")
    roostd = measured(GIL_SWITCH_INTERVAL)
    label, default_busy = upper(default["busy"])
    _label, roostd_busy = upper(roostd["busy"])
    for name, times in (("default", default), ("roostd", roostd)):
        emit(
            BENCH,
            f"page_read_idle_{name}_{label}",
            upper(times["idle"])[1],
            "ms",
            reads=READS,
            **spread(times["idle"]),
        )
    emit(
        BENCH,
        f"page_read_beside_busy_thread_default_{label}",
        default_busy,
        "ms",
        reads=READS,
        **spread(default["busy"]),
    )
    emit(
        BENCH,
        f"page_read_beside_busy_thread_roostd_{label}",
        roostd_busy,
        "ms",
        baseline=default_busy,
        ratio_at_most=TARGET_RATIO,
        reads=READS,
        interval_ms=GIL_SWITCH_INTERVAL * 1000,
        **spread(roostd["busy"]),
    )


if __name__ == "__main__":
    main()
