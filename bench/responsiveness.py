"""Responsiveness benchmark: cached reads of other nodes while a large node synchronises.

Prints one JSON object a line through ``bench/figures.py``; progress goes to stderr.

On loopback: a private dbus-daemon, ejabberd, and ``roostd`` as a real process with its
event-loop probe on (``ROOST_LOOP_LAG_MS``, see ``roost.service.loop_lag``). Bob's
profile caches 20 comment nodes of 100 items (about 300 bytes of Atom each, as in
``bench/cache.py``). Then this process calls ``GetItems`` on those cached nodes at a
steady rate (open loop: a call leaves at its time whatever the earlier ones do), first
with nothing else going on (idle), then while nodes of 10,000 items synchronise, one
after the other, from the ``GetItems`` that meets each to its ``completed``. Only the
calls made within a sync count for the second figure. The 10,000-item nodes are written
into ejabberd's tables by ``bench/ejabberd_fill.py``.

Two kinds of calls take turns:

* ``distinct``: the newest N items of a node, N and the node going through all 2,000
  pairs in a fixed shuffled order, so that a request comes back only after 2,000 others
  and the cache's memo of recent answers (1,024) never answers it: every call reads the
  database;
* ``repeated``: the newest 20 of one of the 20 nodes in turn, which the memo answers
  (except just after a node's copy changed).

The whole run is made twice. First every process shares the machine's cores, the
server's work on the syncs included; then (on a machine of two cores or more) ejabberd
runs on a core of its own and the rest on the others (figures under
``responsiveness_server_apart``), as for a person whose server is on another machine:
what is left is the daemon's own work competing with the reads, not the server's.

Figures: the p99 (the maximum with fewer than 100 calls) of each kind, idle and during
the syncs; the target is a p99 during the syncs at most 3 times the idle one. The
daemon's log gives the event loop's largest stall in each phase and what it was running
(printed on stderr), and the syncs' rate is reported beside them.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Variant

from bench.ejabberd_fill import fill_ejabberd_node
from bench.figures import emit, progress, spread, upper
from bench.loopback import COMMENTS, comment_entry, ejabberd_world, sync_node
from roost.bridge.client import RoostClient
from roost.bridge.constants import PUBSUB_INTERFACE
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import Roostd, wait_for_name
from tests.fixtures.xmpp import EjabberdServer

BENCH = "responsiveness"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
SYNC_ITEMS = 10_000
SYNCS = 1 if SMALL else 3
OTHER_NODES = 20
OTHER_ITEMS = 100
CALLS_PER_S = 100
IDLE_SECONDS = 5.0 if SMALL else 12.0
TARGET_RATIO = 3.0
LAG_THRESHOLD_MS = 20
STALL = re.compile(
    r"^(\S+ \S+) WARNING roost\.service\.loop_lag: event loop stalled (\d+) ms "
    r"\(.*?on the CPU (\d+) ms, collecting (\d+) ms\)(.*)"
)


@dataclass
class Samples:
    """Latencies (ms) of each kind of call, and when the phase ran (epoch seconds)."""

    times: dict[str, list[float]] = field(default_factory=lambda: {"distinct": [], "repeated": []})
    windows: list[tuple[float, float]] = field(default_factory=list)


class Reader:
    """Calls GetItems on the cached nodes at a steady rate while a phase runs."""

    def __init__(self, client: RoostClient, service: str, nodes: list[str]) -> None:
        self.client = client
        pairs = [(node, n) for node in nodes for n in range(1, OTHER_ITEMS + 1)]
        random.Random(3).shuffle(pairs)
        self.distinct = pairs
        self.repeated = nodes
        self.service = service
        self.sent = 0

    def _call(self, number: int) -> tuple[str, Callable[[], Awaitable[Any]]]:
        if number % 2:
            node = self.repeated[(number // 2) % len(self.repeated)]
            kind, size = "repeated", 20
        else:
            node, size = self.distinct[(number // 2) % len(self.distinct)]
            kind = "distinct"
        body = ["bob", self.service, node, {"max_items": Variant("u", size)}]
        return kind, lambda: self.client.call(PUBSUB_INTERFACE, "GetItems", "sssa{sv}", body)

    async def run(self, samples: Samples, done: asyncio.Event) -> None:
        """Call at CALLS_PER_S until ``done``; each call's latency into ``samples``."""
        began = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        started_at = time.time()
        calls = 0
        while not done.is_set():
            delay = began + calls / CALLS_PER_S - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(done.wait(), delay)
                    break
                except TimeoutError:
                    pass
            kind, call = self._call(self.sent)
            self.sent += 1
            calls += 1
            task = asyncio.create_task(self._timed(call, samples.times[kind]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        samples.windows.append((started_at, time.time()))
        await asyncio.gather(*pending)

    @staticmethod
    async def _timed(call: Callable[[], Awaitable[Any]], into: list[float]) -> None:
        started = time.perf_counter()
        items, _meta = await call()
        into.append((time.perf_counter() - started) * 1000)
        assert items, "a cached node answered no items"


# -- set-up --------------------------------------------------------------------------------


async def publisher(server: EjabberdServer) -> tuple[SessionManager, PubsubService]:
    """A service-level client for alice, to create nodes."""

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, EventHub())
    await sessions.connect("alice")
    return sessions, PubsubService(sessions, EventHub())


async def make_nodes(server: EjabberdServer, sizes: list[int]) -> list[str]:
    """New comment nodes holding ``sizes`` items each, written into ejabberd's tables."""
    sessions, pubsub = await publisher(server)
    nodes = []
    for _size in sizes:
        node = f"{COMMENTS}bench-{uuid.uuid4().hex[:8]}"
        await pubsub.create_node("alice", server.pubsub_service, node, {"pubsub#max_items": "max"})
        nodes.append(node)
    await sessions.close()
    for node, size in zip(nodes, sizes, strict=True):
        payloads = ((f"i{n:06d}", comment_entry(n)) for n in range(size))
        count = await fill_ejabberd_node(server, node, server.jid("alice"), payloads)
        assert count == size, (count, size)
    return nodes


# -- the log -------------------------------------------------------------------------------


@dataclass
class Stall:
    """A stall of the daemon's event loop, from its log."""

    at: float
    ms: int
    on_cpu_ms: int
    collecting_ms: int
    running: str


def stalls(daemon: Roostd) -> list[Stall]:
    """Every stall the daemon's probe logged."""
    found = []
    for line in daemon.log_text().splitlines():
        match = STALL.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            running = match[5].removeprefix("; running: ")
            found.append(Stall(stamp, int(match[2]), int(match[3]), int(match[4]), running))
    return found


def within(found: list[Stall], windows: list[tuple[float, float]]) -> list[Stall]:
    """The stalls logged within the phase's windows (a stall is logged as it ends)."""
    return [s for s in found if any(start <= s.at <= end + 0.5 for start, end in windows)]


# -- the run -------------------------------------------------------------------------------


def report(bench: str, kind: str, idle: list[float], busy: list[float]) -> None:
    """Idle and during-sync latencies of one kind of call; the target on their ratio."""
    idle_name, idle_value = upper(idle)
    busy_name, busy_value = upper(busy)
    emit(
        bench,
        f"get_items_{kind}_idle_{idle_name}",
        idle_value,
        "ms",
        calls=len(idle),
        median=round(spread(idle)["median"], 3),
    )
    emit(
        bench,
        f"get_items_{kind}_during_sync_{busy_name}",
        busy_value,
        "ms",
        baseline=idle_value,
        ratio_at_most=TARGET_RATIO,
        calls=len(busy),
        median=round(spread(busy)["median"], 3),
        max=round(max(busy), 3),
    )


def report_stalls(bench: str, phase: str, found: list[Stall], seconds: float) -> None:
    """The largest stall of a phase as a figure, with how much of it the loop's thread
    ran and collected; the largest few on stderr, with what they ran."""
    ordered = sorted(found, key=lambda s: -s.ms)
    worst = ordered[0] if ordered else Stall(0.0, 0, 0, 0, "")
    emit(
        bench,
        f"loop_max_stall_{phase}",
        float(worst.ms),
        "ms",
        on_cpu_ms=worst.on_cpu_ms,
        collecting_ms=worst.collecting_ms,
        stalls_over_threshold=len(found),
        stalled_share=round(sum(s.ms for s in found) / 1000 / seconds, 3),
        max_collecting_ms=max((s.collecting_ms for s in found), default=0),
        threshold_ms=LAG_THRESHOLD_MS,
    )
    for stall in ordered[:6]:
        progress(
            bench,
            f"{phase} stall {stall.ms} ms (on the CPU {stall.on_cpu_ms} ms, collecting "
            f"{stall.collecting_ms} ms): {stall.running[:900]}",
        )


async def measure(bench: str, address: str, server: EjabberdServer, daemon: Roostd) -> None:
    """Cache the small nodes, read them idle, then while each large node syncs."""
    progress(bench, f"filling {OTHER_NODES} nodes of {OTHER_ITEMS} and {SYNCS} of {SYNC_ITEMS}")
    nodes = await make_nodes(server, [OTHER_ITEMS] * OTHER_NODES + [SYNC_ITEMS] * SYNCS)
    small, large = nodes[:OTHER_NODES], nodes[OTHER_NODES:]
    client = await RoostClient.connect(address)
    jid, password, options = server.credentials("bob")
    await client.create_profile("bob", jid, password, options)
    await client.connect_profile("bob")
    service = server.pubsub_service
    progress(bench, "caching the small nodes")
    for node in small:
        await sync_node(client, "bob", service, node, 600)
    reader = Reader(client, service, small)
    warm = Samples()
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, done.set)
    await reader.run(warm, done)  # the daemon's and the client's first calls

    progress(bench, f"idle reads, {IDLE_SECONDS:.0f} s at {CALLS_PER_S} calls/s")
    idle = Samples()
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(IDLE_SECONDS, done.set)
    await reader.run(idle, done)

    busy = Samples()
    rates = []
    for node in large:
        progress(bench, f"reads while {node} syncs")
        done = asyncio.Event()
        reading = asyncio.create_task(reader.run(busy, done))
        try:
            seconds = await sync_node(client, "bob", service, node, 600)
        finally:
            done.set()
            await reading
        state = await client.get_node_state("bob", service, node)
        assert state["item_count"] == SYNC_ITEMS, state
        rates.append(SYNC_ITEMS / seconds)
        progress(bench, f"synchronised in {seconds:.2f} s")
    client.close()

    for kind in ("distinct", "repeated"):
        report(bench, kind, idle.times[kind], busy.times[kind])
    found = stalls(daemon)
    for phase, samples in (("idle", idle), ("during_sync", busy)):
        seconds = sum(end - start for start, end in samples.windows)
        report_stalls(bench, phase, within(found, samples.windows), seconds)
    emit(
        bench,
        f"sync_{SYNC_ITEMS // 1000}k_rate_under_reads",
        sum(rates) / len(rates),
        "items/s",
        syncs=len(rates),
    )


def server_apart(data_dir: Path, core: int) -> None:
    """Move every thread of the server's processes (those whose command line names its
    data directory) to ``core``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(data_dir).encode() not in (proc / "cmdline").read_bytes():
                continue
            for task in (proc / "task").iterdir():
                os.sched_setaffinity(int(task.name), {core})
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile, or not ours


def run(bench: str, apart: bool) -> None:
    """One run in a world of its own; with ``apart``, the server on a core of its own
    and everything else (the bus, roostd, this client) on the others."""
    began = time.perf_counter()
    cores = sorted(os.sched_getaffinity(0))
    if apart:
        # Set before anything starts: the bus, the server and roostd inherit it.
        os.sched_setaffinity(0, cores[:-1])
    try:
        with ejabberd_world(f"roost-bench-{bench}-", max_items_per_node=1_000_000) as world:
            if apart:
                server_apart(world.server.data_dir, cores[-1])
                progress(bench, f"ejabberd on core {cores[-1]}, the rest on {cores[:-1]}")
            daemon = world.launcher.spawn(
                "--log-level",
                "warning",
                "--config",
                str(world.config),
                env={"ROOST_LOOP_LAG_MS": str(LAG_THRESHOLD_MS)},
            )
            wait_for_name(world.bus.address, timeout=120)
            asyncio.run(measure(bench, world.bus.address, world.server, daemon))
    finally:
        os.sched_setaffinity(0, cores)
    progress(bench, f"done in {time.perf_counter() - began:.0f} s")


def main() -> None:
    """Run the benchmark on loopback, twice: every process sharing the machine's cores,
    then (on a machine of two cores or more) the server on a core of its own, as a
    person's server is on another machine."""
    run(BENCH, apart=False)
    if len(os.sched_getaffinity(0)) >= 2:
        run(f"{BENCH}_server_apart", apart=True)


if __name__ == "__main__":
    main()
