"""Bus fuzz, long version: thousands of random calls of every method at a roostd with a
connected profile and a synchronised node (the suite's tests/reliability/test_bus_fuzz.py,
run long).

First the calls that must be refused, every table of the database compared around each
(table changes must be 0); then calls of any kind, roostd's resident memory read at the
start and the end (after a warm-up). Prints one JSON object a line: calls made, errors by
name, RSS start and end, table changes on refused calls. Set ``ROOST_BENCH_SMALL=1`` for a
tenth of the calls.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit, progress
from tests.fixtures.dbus import RoostdLauncher, start_bus, stop_bus
from tests.fixtures.xmpp import ProsodyServer, free_port
from tests.reliability.fuzz import FuzzStats, mixed_calls, refused_calls, rss_kib, run_fuzz
from tests.reliability.world import build_world

BENCH = "bus_fuzz"
SCALE = 10 if os.environ.get("ROOST_BENCH_SMALL") else 1
REFUSED = 3000 // SCALE
WARM_UP = 1000 // SCALE
MIXED = 6000 // SCALE
# Resident memory may grow this much over the mixed calls after the warm-up.
RSS_GROWTH_KIB = 32 * 1024


def main() -> None:
    """Set the world up, fuzz, report."""
    with tempfile.TemporaryDirectory(prefix="roost-bench-fuzz-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        bus = start_bus(workdir / "bus")
        (workdir / "roostd").mkdir()
        (workdir / "prosody").mkdir(mode=0o755)
        launcher = RoostdLauncher(workdir / "roostd", bus.address)
        server = ProsodyServer(kind="prosody", data_dir=workdir / "prosody", port=free_port())
        server.setup()
        server.start()
        loop = asyncio.new_event_loop()
        try:
            daemon, client, world = loop.run_until_complete(build_world(server, launcher))
            refused = FuzzStats()
            progress(BENCH, f"{REFUSED} refused calls, every table compared around each")
            started = time.perf_counter()
            run_fuzz(loop, client, world, refused_calls(world), REFUSED, refused, shrink=False)
            refused_seconds = time.perf_counter() - started
            progress(BENCH, f"{WARM_UP} calls of any kind to warm up, then {MIXED}")
            run_fuzz(loop, client, world, mixed_calls(world), WARM_UP, FuzzStats(), shrink=False)
            rss_start = rss_kib(world.pid)
            mixed = FuzzStats()
            started = time.perf_counter()
            run_fuzz(loop, client, world, mixed_calls(world), MIXED, mixed, shrink=False)
            mixed_seconds = time.perf_counter() - started
            rss_end = rss_kib(world.pid)
            connected = loop.run_until_complete(client.is_connected(world.profile))
            client.close()
            alive = daemon.process.poll() is None
        finally:
            launcher.stop_all()
            loop.close()
            server.stop()
            stop_bus(bus)
    emit(
        BENCH,
        "refused calls",
        refused.calls,
        "calls",
        seconds=round(refused_seconds, 1),
        errors=dict(refused.errors),
    )
    emit(
        BENCH,
        "table changes on refused calls",
        len(refused.table_changes),
        "changes",
        at_most=0,
        compared=refused.refused_compared,
    )
    emit(
        BENCH,
        "calls of any kind",
        mixed.calls,
        "calls",
        seconds=round(mixed_seconds, 1),
        errors=dict(mixed.errors),
        successes=sum(mixed.successes.values()),
        members=len(mixed.members),
    )
    emit(
        BENCH,
        "roostd RSS growth over the calls of any kind",
        (rss_end - rss_start) / 1024,
        "MiB",
        at_most=RSS_GROWTH_KIB / 1024,
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
    )
    emit(
        BENCH,
        "daemon up and profile connected at the end",
        float(alive and connected),
        "bool",
        at_least=1,
    )


if __name__ == "__main__":
    main()
