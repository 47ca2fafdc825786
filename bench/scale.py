"""Scale: one roostd serving 100 connected profiles, each with a synchronised 1,000-item
node, on PostgreSQL beside the same on SQLite.

The world, on loopback: a private dbus-daemon, ejabberd, a throwaway PostgreSQL cluster
set up as a deployment would be (``bench/postgres_cluster.py``), and ``roostd`` as a real
process (``--log-level info``: nothing is logged per call). 100 accounts are made by
in-band registration; alice's XEP-0277 comments node on the pubsub service holds 1,000
comments (written into ejabberd's tables, ``bench/ejabberd_fill.py``). Each profile
synchronises that node into its own cache, so the cache holds 100 x 1,000 items.

The same run on SQLite (a file), then on PostgreSQL (the same config, the URL given with
``--database``) twice: over the cluster's Unix socket (``postgresql``: a daemon on the
database server's host, as Debian's ``postgresql:///roost`` connects) and over loopback
TCP (``postgresql_tcp``: as to a server on another host, less the network); a fresh
daemon and database each:

1. ``connect_<n>_profiles``: every profile created (one after the other) and connected
   (``Connect`` returns once the session is up; 20 in flight); ``sync_<n>x<items>``:
   from the first ``GetItems`` to the last node's ``completed``, 20 syncs under way at
   most (a profile meets its node when one of them ends); each node's ``item_count`` and
   state are then checked with ``Cache.GetNodeState``.
2. ``rss_synced`` then ``rss_60s_later``: ``VmRSS`` of roostd as the last sync ends and
   60 s later, idle (target under 500 MiB); ``peak_rss``: ``VmHWM`` so far.
3. ``db_reads_*``: cached ``GetItems`` answered from the database, never from the memo
   of recent answers: 4 client processes with 16 calls in flight each (64) for 10 s,
   spread over every profile; each call is a request not asked before since the node
   became current: pages of 20 walked forward with ``after`` and backward with
   ``before`` (each page's token from the previous reply) and 20 random ``item_ids``,
   taking turns. Every reply is checked (the ids asked for, in node order, from the
   cache, the node's count). Figures: calls/s (target at least 1,000), p50 and p99
   latency as the clients see them; the calls/s line also says how much CPU time each
   call cost roostd and, on PostgreSQL, the database server (all its processes).
   roostd logs, when it stops, how many cached answers it read from the database and
   how many it reused from memory: the bench requires every call it made to be a
   database read and none reused.

PostgreSQL's figures carry SQLite's as their baseline. ``ROOST_BENCH_SMALL=1``: 10
profiles of 200 items, 10 s instead of 60, 3 s of reads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Variant
from sqlalchemy import make_url

from bench.ejabberd_fill import fill_ejabberd_node
from bench.figures import emit, progress, spread
from bench.loopback import COMMENTS, LoopbackWorld, comment_entry, ejabberd_world
from bench.postgres_cluster import bench_cluster, settings_text
from roost.bridge.client import RoostClient
from roost.bridge.constants import PUBSUB_INTERFACE
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import Roostd, wait_for_name

BENCH = "scale"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
PROFILES = 10 if SMALL else 100
ITEMS = 200 if SMALL else 1_000
SETTLE_SECONDS = 10.0 if SMALL else 60.0
READ_SECONDS = 3.0 if SMALL else 10.0
CLIENT_PROCESSES, IN_FLIGHT_EACH = 4, 16
IN_FLIGHT = CLIENT_PROCESSES * IN_FLIGHT_EACH
# Connect calls in flight, and syncs under way, at once. 100 syncs started together on
# SQLite left one node's analysis failed on "database is locked" (its write waited past
# the busy timeout) and never retried: see docs/performance.md.
AT_ONCE = 20
SYNC_TIMEOUT = 300.0
PAGE = 20
TARGET_RSS_MIB = 500.0
TARGET_CALLS_PER_S = 1_000.0
# What roostd logs when it stops (PubsubCache.close): its cached answers by where from.
COUNTS = re.compile(r"(\d+) read from the database, (\d+) reused from memory")


def item_id(n: int) -> str:
    """The id of the node's ``n``-th item."""
    return f"i{n:06d}"


def profile_name(n: int) -> str:
    """The ``n``-th profile (its account is ``u<n>``)."""
    return f"p{n:03d}"


# -- the world ----------------------------------------------------------------------------


async def make_node(world: LoopbackWorld) -> str:
    """alice's comments node on the pubsub service, holding ITEMS comments."""
    server = world.server

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, EventHub())
    pubsub = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    node = f"{COMMENTS}scale-{uuid.uuid4().hex[:8]}"
    await pubsub.create_node("alice", server.pubsub_service, node, {"pubsub#max_items": "max"})
    await sessions.close()
    payloads = ((item_id(n), comment_entry(n)) for n in range(ITEMS))
    count = await fill_ejabberd_node(server, node, server.jid("alice"), payloads)
    assert count == ITEMS, count
    return node


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User and system CPU time of process ``pid`` (all its threads); with ``children``,
    also that of its children, those running and those it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # it ended meanwhile: its time is now in the parent's
            if int(child[1]) == pid:
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def mib(pid: int, field_name: str) -> float:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


async def at_most(count: int, calls: list[Awaitable[Any]]) -> None:
    """Await ``calls`` (coroutines not yet started) with at most ``count`` running at
    once; the first failure is raised."""
    limit = asyncio.Semaphore(count)

    async def one(call: Awaitable[Any]) -> None:
        async with limit:
            await call

    await asyncio.gather(*(one(call) for call in calls))


# -- connecting and synchronising ---------------------------------------------------------


@dataclass
class Figures:
    """What one daemon measured."""

    connect_s: float = 0.0
    sync_s: float = 0.0
    rss_synced: float = 0.0
    rss_settled: float = 0.0
    settle_range: tuple[float, float] = (0.0, 0.0)
    peak_rss: float = 0.0
    calls_per_s: float = 0.0
    # CPU milliseconds per read: roostd's, and the database server's (PostgreSQL only).
    roostd_cpu_ms: float = 0.0
    server_cpu_ms: float | None = None
    latencies: list[float] = field(default_factory=list)
    shapes: dict[str, int] = field(default_factory=dict)
    rss_after_reads: float = 0.0


async def sync_all(client: RoostClient, names: list[str], service: str, node: str) -> None:
    """Each profile meets ``node`` with a GetItems (it is analysed, then synchronised),
    AT_ONCE syncs under way at most; returns when every one has ``completed``.

    Raises:
        RuntimeError: a sync ended otherwise, or did not end within SYNC_TIMEOUT.
    """
    loop = asyncio.get_running_loop()
    ended: dict[str, asyncio.Future[str]] = {name: loop.create_future() for name in names}

    def changed(profile: str, _service: str, changed_node: str, state: str) -> None:
        future = ended.get(profile)
        ends = state in ("completed", "error", "no_sync")
        if ends and changed_node == node and future is not None and not future.done():
            future.set_result(state)

    limit = asyncio.Semaphore(AT_ONCE)

    async def one(name: str) -> None:
        async with limit:
            await client.get_items(name, service, node, max_items=1)
            try:
                state = await asyncio.wait_for(ended[name], SYNC_TIMEOUT)
            except TimeoutError:
                state = f"no end within {SYNC_TIMEOUT:.0f} s"
            if state != "completed":
                found = await client.get_node_state(name, service, node)
                raise RuntimeError(f"{name}: sync {state}; node state {found}")

    unsubscribe = await client.on_sync_state_changed(changed)
    try:
        await asyncio.gather(*(one(name) for name in names))
    finally:
        unsubscribe()


async def connect_and_sync(world: LoopbackWorld, node: str, pid: int, figures: Figures) -> None:
    """Every profile created, connected and its node synchronised (counts checked), then
    RSS as the syncs end and SETTLE_SECONDS later."""
    server, service = world.server, world.server.pubsub_service
    client = await RoostClient.connect(world.bus.address)
    names = [profile_name(n) for n in range(PROFILES)]

    started = time.perf_counter()
    # One at a time: Creates racing the first one would each store themselves as the
    # default profile, and all but one fail on the params' unique key.
    for n in range(PROFILES):
        jid, password, options = server.credentials(f"u{n:03d}")
        await client.create_profile(profile_name(n), jid, password, options)
    await at_most(AT_ONCE, [client.connect_profile(name) for name in names])
    figures.connect_s = time.perf_counter() - started
    progress(BENCH, f"{PROFILES} profiles connected in {figures.connect_s:.1f} s")

    started = time.perf_counter()
    await sync_all(client, names, service, node)
    figures.sync_s = time.perf_counter() - started
    synced_at = time.monotonic()
    figures.rss_synced = mib(pid, "VmRSS")
    progress(BENCH, f"{PROFILES} x {ITEMS} items synchronised in {figures.sync_s:.1f} s")
    for name in names:
        state = await client.get_node_state(name, service, node)
        assert state["state"] == "completed" and state["item_count"] == ITEMS, (name, state)
    client.close()

    samples = []
    while time.monotonic() < synced_at + SETTLE_SECONDS:
        await asyncio.sleep(min(1.0, synced_at + SETTLE_SECONDS - time.monotonic()))
        samples.append(mib(pid, "VmRSS"))
    figures.rss_settled = samples[-1]
    tail = samples[-30:]
    figures.settle_range = (min(tail), max(tail))
    figures.peak_rss = mib(pid, "VmHWM")


# -- the read load (client processes) -----------------------------------------------------


@dataclass
class Walk:
    """Where a profile's walks stand: forward ``after`` a token, backward ``before``."""

    after: str = ""
    start: int = 0
    before: str = ""
    end: int = ITEMS


@dataclass
class Load:
    """What one client process did: every call (each a database read), and those of
    the measured window with their milliseconds, by shape."""

    calls: int = 0
    latencies: list[float] = field(default_factory=list)
    shapes: dict[str, int] = field(default_factory=dict)


class Reader:
    """One call in flight: its own profiles (every IN_FLIGHT-th), walked both ways with
    random ids between; a reader with none asks random ids of one profile."""

    def __init__(self, index: int) -> None:
        owned = list(range(index, PROFILES, IN_FLIGHT))
        self.walks = {p: Walk() for p in owned}
        self.profiles = owned or [index % PROFILES]
        self.rng = random.Random(index)
        self.step = 0

    def next_request(self) -> tuple[str, int, dict[str, Variant], list[str], int]:
        """(shape, profile, options, ids expected, count expected) of the next call."""
        profile = self.profiles[self.step % len(self.profiles)]
        turn = (self.step // len(self.profiles)) % 4
        self.step += 1
        walk = self.walks.get(profile)
        size = Variant("u", PAGE)
        if walk is not None and turn == 0 and walk.start < ITEMS:
            expected = [item_id(n) for n in range(walk.start, min(ITEMS, walk.start + PAGE))]
            return (
                "after",
                profile,
                {"max_items": size, "after": Variant("s", walk.after)},
                expected,
                ITEMS,
            )
        if walk is not None and turn == 2 and walk.end > 0:
            expected = [item_id(n) for n in range(max(0, walk.end - PAGE), walk.end)]
            return (
                "before",
                profile,
                {"max_items": size, "before": Variant("s", walk.before)},
                expected,
                ITEMS,
            )
        chosen = self.rng.sample(range(ITEMS), PAGE)
        asked = Variant("as", [item_id(n) for n in chosen])
        return "item_ids", profile, {"item_ids": asked}, [item_id(n) for n in sorted(chosen)], PAGE

    def answered(self, shape: str, profile: int, meta: dict[str, Variant]) -> None:
        """Move the profile's walk past the page just read."""
        walk = self.walks.get(profile)
        if walk is None:
            return
        if shape == "after":
            walk.after, walk.start = str(meta["rsm_last"].value), walk.start + PAGE
        elif shape == "before":
            walk.before, walk.end = str(meta["rsm_first"].value), walk.end - PAGE


async def read_loop(
    client: RoostClient,
    service: str,
    node: str,
    reader: Reader,
    load: Load,
    window: tuple[float, float],
) -> None:
    """Calls one after the other until the window ends, each reply checked."""
    start_at, deadline = window
    while time.time() < deadline:
        shape, profile_index, options, expected, count = reader.next_request()
        profile = profile_name(profile_index)
        began, sent = time.time(), time.perf_counter()
        items, meta = await client.call(
            PUBSUB_INTERFACE, "GetItems", "sssa{sv}", [profile, service, node, options]
        )
        ms = (time.perf_counter() - sent) * 1000
        load.calls += 1
        got = [str(i["id"].value) for i in items]
        assert got == expected, f"{shape} {profile}: {got[:2]}… instead of {expected[:2]}…"
        assert meta["from_cache"].value is True, f"{shape} {profile}: not from the cache"
        assert meta["rsm_count"].value == count, (shape, profile, meta["rsm_count"].value)
        reader.answered(shape, profile_index, meta)
        if began >= start_at and time.time() <= deadline:
            load.latencies.append(ms)
            load.shapes[shape] = load.shapes.get(shape, 0) + 1


async def read_load(address: str, service: str, node: str, first: int, start_at: float) -> Load:
    """IN_FLIGHT_EACH readers (``first``, ``first + CLIENT_PROCESSES``, …) on one bus
    connection, from ``start_at`` for READ_SECONDS."""
    client = await RoostClient.connect(address)
    load = Load()
    readers = [Reader(i) for i in range(first, IN_FLIGHT, CLIENT_PROCESSES)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    window = (start_at, start_at + READ_SECONDS)
    await asyncio.gather(*(read_loop(client, service, node, r, load, window) for r in readers))
    client.close()
    return load


def read_process(address: str, service: str, node: str, first: int, start_at: float) -> Load:
    """One client process of the read load."""
    return asyncio.run(read_load(address, service, node, first, start_at))


def reads(address: str, service: str, node: str, figures: Figures) -> int:
    """The read load of CLIENT_PROCESSES processes; returns every call made."""
    context = multiprocessing.get_context("spawn")  # a fork would inherit a running loop
    with context.Pool(CLIENT_PROCESSES) as pool:
        start_at = time.time() + 8.0  # the processes import and connect meanwhile
        args = [(address, service, node, first, start_at) for first in range(CLIENT_PROCESSES)]
        loads = pool.starmap(read_process, args)
    for load in loads:
        figures.latencies += load.latencies
        for shape, n in load.shapes.items():
            figures.shapes[shape] = figures.shapes.get(shape, 0) + n
    figures.calls_per_s = len(figures.latencies) / READ_SECONDS
    return sum(load.calls for load in loads)


# -- one daemon, and the run --------------------------------------------------------------


def measure(
    world: LoopbackWorld, node: str, database: str, url: str | None, server_pid: int | None
) -> Figures:
    """A fresh roostd on ``url`` (None: an SQLite file of its own) through every step;
    ``server_pid``: the PostgreSQL server's postmaster, whose CPU time is counted too."""
    # The launcher names an SQLite file first; a --database given after it wins.
    extra = ("--database", url) if url is not None else ()
    daemon: Roostd = world.launcher.spawn(
        "--log-level", "info", "--config", str(world.config), *extra
    )
    wait_for_name(world.bus.address, timeout=120)
    if daemon.process.poll() is not None:
        raise RuntimeError(f"roostd exited at start:\n{daemon.log_text()}")
    pid, figures = daemon.process.pid, Figures()
    try:
        progress(BENCH, f"{database}: connecting {PROFILES} profiles")
        asyncio.run(connect_and_sync(world, node, pid, figures))
        progress(BENCH, f"{database}: {IN_FLIGHT} reads in flight for {READ_SECONDS:.0f} s")
        roostd_cpu = cpu_seconds(pid)
        server_cpu = cpu_seconds(server_pid, children=True) if server_pid else 0.0
        calls = reads(world.bus.address, world.server.pubsub_service, node, figures)
        figures.roostd_cpu_ms = (cpu_seconds(pid) - roostd_cpu) * 1000 / calls
        if server_pid:
            server_cpu = cpu_seconds(server_pid, children=True) - server_cpu
            figures.server_cpu_ms = server_cpu * 1000 / calls
    except BaseException:
        progress(BENCH, f"roostd's log ends with:\n{daemon.log_text()[-5000:]}")
        raise
    figures.rss_after_reads = mib(pid, "VmRSS")
    if daemon.terminate(120) != 0:
        raise RuntimeError(f"roostd exited with {daemon.process.returncode}")
    found = COUNTS.findall(daemon.log_text())
    assert found, "roostd logged no counts of its cached answers"
    read, reused = (int(n) for n in found[-1])
    assert (read, reused) == (calls, 0), (
        f"roostd read {read} answers from the database and reused {reused} from memory;"
        f" the clients made {calls} calls, each new"
    )
    return figures


def report(database: str, figures: Figures, baseline: Figures | None) -> None:
    """Emit one database's figures (PostgreSQL's beside SQLite's)."""

    def line(
        metric: str, value: float, unit: str, of: Callable[[Figures], float], **more: Any
    ) -> None:
        base = of(baseline) if baseline is not None else None
        emit(BENCH, f"{metric}_{database}", value, unit, baseline=base, **more)

    n = PROFILES
    line(f"connect_{n}_profiles", figures.connect_s, "s", lambda f: f.connect_s)
    rate = n * ITEMS / figures.sync_s
    line(f"sync_{n}x{ITEMS}", figures.sync_s, "s", lambda f: f.sync_s, items_per_s=round(rate))
    line("rss_synced", figures.rss_synced, "MiB", lambda f: f.rss_synced, at_most=TARGET_RSS_MIB)
    low, high = figures.settle_range
    line(
        f"rss_{SETTLE_SECONDS:.0f}s_later",
        figures.rss_settled,
        "MiB",
        lambda f: f.rss_settled,
        at_most=TARGET_RSS_MIB,
        last_30s_min=round(low, 1),
        last_30s_max=round(high, 1),
    )
    line("peak_rss", figures.peak_rss, "MiB", lambda f: f.peak_rss)
    line(
        f"db_reads_calls_per_s_{IN_FLIGHT}_in_flight",
        figures.calls_per_s,
        "calls/s",
        lambda f: f.calls_per_s,
        at_least=TARGET_CALLS_PER_S,
        roostd_cpu_ms_per_call=round(figures.roostd_cpu_ms, 3),
        server_cpu_ms_per_call=None
        if figures.server_cpu_ms is None
        else round(figures.server_cpu_ms, 3),
        **figures.shapes,
    )
    found = spread(figures.latencies)
    line("db_reads_p50", found["median"], "ms", lambda f: spread(f.latencies)["median"])
    line(
        "db_reads_p99",
        found["p99"],
        "ms",
        lambda f: spread(f.latencies)["p99"],
        samples=len(figures.latencies),
    )
    line("rss_after_reads", figures.rss_after_reads, "MiB", lambda f: f.rss_after_reads)


def main() -> None:
    """Set up the world, then measure on SQLite and on PostgreSQL."""
    began = time.perf_counter()
    with bench_cluster() as cluster, ejabberd_world("roost-bench-scale-", ITEMS) as world:
        progress(BENCH, f"PostgreSQL cluster up ({settings_text()})")
        asyncio.run(world.server.register_many([f"u{n:03d}" for n in range(PROFILES)]))
        node = asyncio.run(make_node(world))
        progress(BENCH, f"{PROFILES} accounts and a {ITEMS}-item node ready")
        on_sqlite = measure(world, node, "sqlite", None, None)
        report("sqlite", on_sqlite, None)
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        with cluster.database() as url:
            name = make_url(url).database
            assert name is not None
            over_socket = cluster.socket_url(name)
            on_postgres = measure(world, node, "postgresql", over_socket, postmaster)
        report("postgresql", on_postgres, on_sqlite)
        with cluster.database() as url:
            on_tcp = measure(world, node, "postgresql_tcp", url, postmaster)
        report("postgresql_tcp", on_tcp, on_sqlite)
    progress(BENCH, f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
