"""Writes beside reads: stored values and roster changes at a steady rate while readers
page a node and search it, on an SQLite file, through the stores.

First the readers alone (the baseline), then the same readers while values are written
at WRITE_RATE a second and roster changes at ROSTER_RATE: what a write costs its caller,
and what the writes cost the reads. The writes come at a fixed rate rather than as fast
as they can, so that both phases do the same work and their figures compare (the soak,
which saturates the daemon, cannot say that: there a faster call makes the others wait
longer). Every write is read back at the end.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit
from roost.storage import Database, RosterEntry, SearchQuery
from roost.storage.item_records import ItemInput

BENCH = "writes"
ITEMS = 1000
READERS = 4
PHASE_SECONDS = 10.0
WRITE_RATE = 50.0  # stored values a second
ROSTER_RATE = 10.0  # roster changes a second


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Phase:
    """The latencies (ms) one phase measured."""

    def __init__(self) -> None:
        self.reads: list[float] = []
        self.searches: list[float] = []
        self.values: list[float] = []
        self.contacts: list[float] = []


async def timed(into: list[float], call: object) -> None:
    started = time.perf_counter()
    await call  # type: ignore[misc]
    into.append((time.perf_counter() - started) * 1000)


async def run_phase(db: Database, node: int, writing: bool) -> Phase:
    """Readers and a searcher for PHASE_SECONDS; with ``writing``, the writers too."""
    phase = Phase()
    deadline = time.perf_counter() + PHASE_SECONDS

    async def reader() -> None:
        n = 0
        while time.perf_counter() < deadline:
            # A page anywhere in the node, as a frontend scrolling it asks.
            before = f"i{(n * 37) % ITEMS:05d}"
            await timed(phase.reads, db.items.get_items(node, max_items=20, before=before))
            n += 1
            await asyncio.sleep(0)

    async def searcher() -> None:
        n = 0
        while time.perf_counter() < deadline:
            query = SearchQuery.from_mapping({"fts": f"thing{n % 50}"})
            await timed(phase.searches, db.search.search_items(query))
            n += 1
            await asyncio.sleep(0)

    async def at_rate(rate: float, write: object, into: list[float]) -> None:
        started = time.perf_counter()
        n = 0
        while time.perf_counter() < deadline:
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            await timed(into, write(n))  # type: ignore[operator]
            n += 1

    tasks = [reader() for _ in range(READERS)] + [searcher()]
    if writing:
        tasks.append(
            at_rate(
                WRITE_RATE,
                lambda n: db.values.set_value("p", "bench", f"k{n % 200}", "i", n),
                phase.values,
            )
        )
        tasks.append(
            at_rate(
                ROSTER_RATE,
                lambda n: db.roster.upsert_contact(
                    "p", RosterEntry(f"c{n % 50}@example.org", f"name {n}"), f"v{n}"
                ),
                phase.contacts,
            )
        )
    await asyncio.gather(*tasks)
    return phase


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="roost-bench-writes-") as tmp:
        db = await Database.open(f"sqlite+aiosqlite:///{tmp}/roost.sqlite")
        try:
            await db.profiles.create_profile("p", "p@example.org", "x", {})
            node = (await db.nodes.get_or_create_node("p", "pubsub.example.org", "blog")).id
            await db.items.upsert_items(
                node,
                [
                    ItemInput(
                        f"i{n:05d}",
                        "p@example.org",
                        f"<item xmlns='http://jabber.org/protocol/pubsub' id='i{n:05d}'/>",
                        {"title": f"entry {n}"},
                        f"words about thing{n % 50} and more words",
                        None,
                    )
                    for n in range(ITEMS)
                ],
            )
            assert await db.items.count_items(node) == ITEMS
            idle = await run_phase(db, node, writing=False)
            busy = await run_phase(db, node, writing=True)
            stored = await db.values.get_values("p", "bench", [])
            _, contacts = await db.roster.get_roster("p")
        finally:
            await db.close()
    assert len(stored) == min(200, len(busy.values)), "a stored value is missing"
    assert len(contacts) == min(50, len(busy.contacts)), "a contact is missing"
    emit(
        BENCH,
        "set_value_p50",
        percentile(busy.values, 0.5),
        "ms",
        at_most=5.0,
        samples=len(busy.values),
        rate=WRITE_RATE,
    )
    emit(
        BENCH,
        "set_value_p99",
        percentile(busy.values, 0.99),
        "ms",
        at_most=50.0,
        samples=len(busy.values),
    )
    emit(
        BENCH,
        "roster_change_p99",
        percentile(busy.contacts, 0.99),
        "ms",
        at_most=50.0,
        samples=len(busy.contacts),
        rate=ROSTER_RATE,
    )
    for metric, while_writing, alone in (
        ("get_items_page_p50_while_writing", busy.reads, idle.reads),
        ("search_p50_while_writing", busy.searches, idle.searches),
    ):
        emit(
            BENCH,
            metric,
            statistics.median(while_writing),
            "ms",
            baseline=statistics.median(alone),
            ratio_at_most=1.5,
            samples=len(while_writing),
        )
    emit(
        BENCH,
        "reads_done_while_writing",
        len(busy.reads),
        "reads",
        baseline=len(idle.reads),
        ratio_at_least=0.67,
    )


if __name__ == "__main__":
    asyncio.run(main())
