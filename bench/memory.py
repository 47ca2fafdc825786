"""Memory benchmark: roostd's resident set at each stage of a day's use, against its targets.

Prints one JSON object a line through ``bench/figures.py``; progress goes to stderr. See
the "Memory" section of docs/performance.md for the breakdown behind these figures.

One run, on loopback: a private dbus-daemon, ejabberd, and one ``roostd`` as a real
process (``--log-level info``; a config file raises ``max_items_per_node`` so that the
large node is kept whole). Both nodes are filled before the daemon starts, by writing
ejabberd's tables (``bench/ejabberd_fill.py``): 1,000 and 100,000 XEP-0277 comments of
about 300 bytes of Atom each. RSS is read from ``/proc/<pid>/status`` (``VmRSS``), the
peak from ``VmHWM`` after resetting it (``/proc/<pid>/clear_refs``) when the stage
starts, so the peak is the stage's own.

1. ``rss_name_owned``: as soon as the daemon owns its bus name (empty database).
2. ``rss_2_profiles_connected``: two profiles (bob and carol) created and connected, 5 s
   later.
3. ``rss_after_sync_1k``: bob's first ``GetItems`` on the 1,000-item node; once it is
   ``completed`` (item count checked), some reads: the whole node and the newest 20,
   10 times each, and a full-text search. ``rss_60s_after_sync_1k`` is read 60 s after
   the sync ended (target 90 MiB); RSS is sampled every second meanwhile and the
   samples' range over the last 30 s is in the line (``last_30s_min``, ``last_30s_max``),
   which shows whether it is still moving. The 60 s are not shortened: what the daemon
   does by then (the arenas' trim, the reads' memos) is part of the figure.
4. ``peak_rss_sync_100k`` (target 150 MiB): carol's sync of the 100,000-item node in
   the same daemon, its item count checked; ``rss_after_sync_100k`` and
   ``rss_60s_after_sync_100k``: right after ``completed`` and 60 s later (target: back
   within 10 MiB of ``rss_60s_after_sync_1k``, i.e. memory given back).

At each stage roostd also says who holds its resident set (``ROOST_MEMORY_TRACE`` with
no frames: a ``SIGUSR1`` logs the figures, nothing is traced): glibc's heap in use and
free but kept, and the database library's own memory (``heap_in_use_mib``,
``heap_free_mib``, ``database_mib`` in the stage's line).

``ROOST_BENCH_SMALL=1``: 10,000 items instead of 100,000 and 10 s instead of 60 s (a
quick run; its late figures are then not the targets' own).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ejabberd_fill import fill_ejabberd_node
from bench.figures import emit, progress
from bench.loopback import COMMENTS, comment_entry, ejabberd_world, sync_node
from roost.bridge.client import RoostClient
from roost.service.events import EventHub
from roost.service.memory_trace import MemoryFigures
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import Roostd, wait_for_name
from tests.fixtures.xmpp import EjabberdServer

BENCH = "memory"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
SMALL_NODE = 1_000
LARGE_NODE = 10_000 if SMALL else 100_000
SETTLE_SECONDS = 10.0 if SMALL else 60.0
CONNECTED_SETTLE = 5.0
READ_ROUNDS = 10

TARGET_AFTER_SYNC_MIB = 90.0
TARGET_PEAK_LARGE_MIB = 150.0
GIVEN_BACK_MIB = 10.0


class Process:
    """What ``/proc`` says of the daemon's memory."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def mib(self, field: str) -> float:
        """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in MiB."""
        for line in self.status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in {self.status}")

    def rss(self) -> float:
        """The resident set now, in MiB."""
        return self.mib("VmRSS")

    def reset_peak(self) -> None:
        """Make the peak (``VmHWM``) the current RSS, so that a stage measures its own."""
        self.clear_refs.write_text("5")


async def make_nodes(server: EjabberdServer) -> dict[int, str]:
    """The two comments nodes of alice on the pubsub service, filled; {size: node}."""

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, EventHub())
    pubsub = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    nodes = {}
    for size in (SMALL_NODE, LARGE_NODE):
        node = f"{COMMENTS}memory-{size}-{uuid.uuid4().hex[:8]}"
        config = {"pubsub#max_items": "max"}
        await pubsub.create_node("alice", server.pubsub_service, node, config)
        nodes[size] = node
    await sessions.close()
    for size, node in nodes.items():
        started = time.perf_counter()
        payloads = ((f"i{n:06d}", comment_entry(n)) for n in range(size))
        count = await fill_ejabberd_node(server, node, server.jid("alice"), payloads)
        assert count == size, (count, size)
        progress(BENCH, f"{size} items written in {time.perf_counter() - started:.1f} s")
    return nodes


async def item_count(client: RoostClient, profile: str, service: str, node: str) -> int:
    """The node's item count as the cache says it."""
    return int((await client.get_node_state(profile, service, node))["item_count"])


async def settle(proc: Process, seconds: float) -> list[float]:
    """RSS sampled every second for ``seconds``; the samples."""
    samples = []
    for _ in range(int(seconds)):
        await asyncio.sleep(1.0)
        samples.append(proc.rss())
    return samples


async def watch_peak(proc: Process, until: asyncio.Future[Any]) -> float:
    """The highest RSS sampled every 0.2 s until ``until`` is done (VmHWM's cross-check)."""
    highest = proc.rss()
    while not until.done():
        highest = max(highest, proc.rss())
        await asyncio.sleep(0.2)
    return highest


class Figures:
    """Asks roostd (started with figures-only memory tracing) who holds its memory."""

    def __init__(self, daemon: Roostd) -> None:
        self.daemon = daemon
        self.asked = 0

    def now(self) -> dict[str, float]:
        """The figures, in MiB, as the fields of a stage's line."""
        self.asked += 1
        self.daemon.process.send_signal(signal.SIGUSR1)
        mark = f"memory figures {self.asked}: "
        text = self.daemon.wait_for_log(mark)
        line = next(line for line in text.splitlines() if mark in line)
        figures = MemoryFigures.from_description(line.split(mark, 1)[1])
        wanted = ("heap_in_use", "heap_free", "database")
        mib = {name: getattr(figures, name) for name in wanted}
        return {f"{k}_mib": round(v / 2**20, 1) for k, v in mib.items() if v is not None}


def settled_extra(samples: list[float]) -> dict[str, float]:
    """The range of the last 30 s of samples: how far RSS still moves."""
    tail = samples[-30:]
    return {"last_30s_min": round(min(tail), 1), "last_30s_max": round(max(tail), 1)}


async def stages(daemon: Roostd, server: EjabberdServer, nodes: dict[int, str]) -> None:
    """Every stage on one daemon, each figure emitted as it is measured."""
    proc = Process(daemon.process.pid)
    figures = Figures(daemon)
    emit(BENCH, "rss_name_owned", proc.rss(), "MiB", **figures.now())
    service = server.pubsub_service

    client = await RoostClient.connect(daemon.bus_address)
    for name, user in (("bob", "bob"), ("carol", "carol")):
        jid, password, options = server.credentials(user)
        await client.create_profile(name, jid, password, options)
        await client.connect_profile(name)
    await asyncio.sleep(CONNECTED_SETTLE)
    emit(BENCH, "rss_2_profiles_connected", proc.rss(), "MiB", profiles=2)

    small = nodes[SMALL_NODE]
    progress(BENCH, f"syncing {SMALL_NODE} items")
    await sync_node(client, "bob", service, small)
    count = await item_count(client, "bob", service, small)
    assert count == SMALL_NODE, count
    for _ in range(READ_ROUNDS):
        items, _meta = await client.get_items("bob", service, small)
        assert len(items) == SMALL_NODE, len(items)
        newest, _meta = await client.get_items("bob", service, small, max_items=20)
        assert len(newest) == 20, len(newest)
    hits = await client.search(fts="comment", limit=100)
    assert len(hits) == 100, len(hits)
    emit(BENCH, "rss_after_sync_1k", proc.rss(), "MiB", items=count)
    progress(BENCH, f"waiting {SETTLE_SECONDS:.0f} s")
    samples = await settle(proc, SETTLE_SECONDS)
    emit(
        BENCH,
        f"rss_{SETTLE_SECONDS:.0f}s_after_sync_1k",
        samples[-1],
        "MiB",
        at_most=TARGET_AFTER_SYNC_MIB,
        items=count,
        profiles=2,
        **settled_extra(samples),
        **figures.now(),
    )
    settled = samples[-1]

    large = nodes[LARGE_NODE]
    progress(BENCH, f"syncing {LARGE_NODE} items")
    proc.reset_peak()
    started = time.perf_counter()
    syncing = asyncio.ensure_future(sync_node(client, "carol", service, large))
    sampled = await watch_peak(proc, syncing)
    await syncing
    seconds = time.perf_counter() - started
    peak, after = proc.mib("VmHWM"), proc.rss()
    count = await item_count(client, "carol", service, large)
    assert count == LARGE_NODE, count
    label = f"{LARGE_NODE // 1000}k"
    emit(
        BENCH,
        f"peak_rss_sync_{label}",
        peak,
        "MiB",
        at_most=TARGET_PEAK_LARGE_MIB,
        items=count,
        sampled_peak=round(sampled, 1),
        seconds=round(seconds, 1),
    )
    emit(BENCH, f"rss_after_sync_{label}", after, "MiB", items=count, **figures.now())
    progress(BENCH, f"waiting {SETTLE_SECONDS:.0f} s")
    samples = await settle(proc, SETTLE_SECONDS)
    emit(
        BENCH,
        f"rss_{SETTLE_SECONDS:.0f}s_after_sync_{label}",
        samples[-1],
        "MiB",
        baseline=settled,
        at_most=settled + GIVEN_BACK_MIB,
        items=count,
        **settled_extra(samples),
        **figures.now(),
    )
    client.close()


def main() -> None:
    """Start the bus, ejabberd and roostd; measure every stage."""
    began = time.perf_counter()
    with ejabberd_world("roost-bench-memory-", max_items_per_node=1_000_000) as world:
        nodes = asyncio.run(make_nodes(world.server))
        # Figures only: nothing is traced, and nothing written there.
        env = {"ROOST_MEMORY_TRACE": str(world.config.parent), "ROOST_MEMORY_TRACE_FRAMES": "0"}
        daemon = world.launcher.spawn("--log-level", "info", "--config", str(world.config), env=env)
        wait_for_name(world.bus.address, timeout=60)
        if daemon.process.poll() is not None:
            raise RuntimeError(f"roostd exited at start:\n{daemon.log_text()}")
        asyncio.run(stages(daemon, world.server, nodes))
    progress(BENCH, f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
