"""Database reads: GetItems answered from the cache's database, as a frontend reads a blog.

A repeated identical request is answered from the memory of recent answers
(``NodeCurrency.recent_answer``) without the database; what a frontend does most is not
repeated: it scrolls a blog page after page, opens items by id, reads many nodes. This
bench measures those reads, each request asked for the first time since the node last
changed, so that the database answers it, beside two baselines taken in the same run and
request by request:

- **bare**: a bare dbus-fast service on the same bus, whose ``GetItems`` has Roost's
  signature and returns, from a plain method, the very reply Roost just gave (the same
  ``a{sv}`` records, the same sizes; loaded by an untimed call before each timed one);
- **memo**: the same request asked of roostd again at once, answered from its recent
  answers (reported as its own figures, ``…_memo``).

The world: a private dbus-daemon, ejabberd on loopback, and ``roostd`` as a real process
(``--log-level info``). alice fills XEP-0277 nodes (comments nodes of the pubsub
service, so that the built-in microblog analyser syncs and parses them) with Atom posts of
about 1.5 KB; bob's profile in roostd synchronises them. The client is this process,
calling ``GetItems`` through the client proxy's ``call``:

- ``walk_after_20``: a 1,000-item node walked forward in pages of 20 (``after`` the
  previous page's ``rsm_last``), from the first page and from ``WALKS - 1`` other starting
  items (``after`` an item's token, as after opening one item), so that no page is asked
  twice;
- ``walk_before_20``: the same backward (``before`` each page's ``rsm_first``);
- ``item_ids_20``: 20 distinct ids drawn at random, in random order, never the same set
  twice;
- ``round_robin_20``: ``max_items`` 20 of each of 100 nodes in turn; between passes every
  node is synchronised again (``Cache.Sync``), which leaves its items as they are but ends
  its recent answers.

Every reply is checked before anything is reported: the items asked for, in node order,
each with ``parsed``, and the node's count. roostd counts the cached answers it read from
the database and those it reused from memory, and logs them when it stops; the bench
checks them against the requests it made, so a database figure never hides a memo hit.

Targets: the database median at most 2x the bare service's and at most 1.5x the memo's.
Prints JSON lines through ``bench/figures.py``. ``ROOST_BENCH_SMALL=1`` for a 200-item
node, 20 round-robin nodes and fewer rounds. ``ROOST_BENCH_PROFILE=FILE`` runs roostd
under cProfile and writes its stats to FILE (the figures are then not comparable).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import random
import re
import signal
import subprocess
import sys
import time
import unittest.mock
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method

from bench.figures import emit, progress, spread, upper
from bench.loopback import ejabberd_world
from roost.bridge.bus_writer import tolerate_full_send_buffer
from roost.bridge.client import RoostClient
from roost.bridge.constants import OBJECT_PATH, PUBSUB_INTERFACE
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures import dbus as dbus_fixtures
from tests.fixtures.dbus import Roostd, RoostdLauncher, wait_for_name
from tests.fixtures.xmpp import XmppServer

BENCH = "db_reads"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
PROFILE = os.environ.get("ROOST_BENCH_PROFILE")
ITEMS = 200 if SMALL else 1_000
NODES = 20 if SMALL else 100
NODE_ITEMS = 40
PAGE = 20
# Walks of each direction, each from its own starting item: about ITEMS / PAGE pages each.
WALKS = 1 if SMALL else 3
BY_ID_ROUNDS = 40 if SMALL else 150
PASSES = 1 if SMALL else 3
# Targets: the database's median against the bare service's and against the memo's.
BARE_RATIO, MEMO_RATIO = 2.0, 1.5

ATOM = "http://www.w3.org/2005/Atom"
COMMENTS = "urn:xmpp:microblog:0:comments/"
BARE_NAME = "org.roost.BenchBareDbReads"
DBusItems = Annotated[list[Any], DBusSignature("aa{sv}")]
# What roostd logs when it stops (PubsubCache.close): its cached answers by where from.
COUNTS = re.compile(r"(\d+) read from the database, (\d+) reused from memory")

WORDS = [
    "harbour",
    "lantern",
    "meadow",
    "quiet",
    "river",
    "stone",
    "thunder",
    "velvet",
    "willow",
    "amber",
    "bright",
    "cedar",
    "distant",
    "ember",
    "feather",
    "garden",
    "hollow",
    "island",
    "juniper",
    "kettle",
    "linen",
    "marble",
    "northern",
    "orchard",
    "pebble",
    "quarry",
    "rustle",
    "silver",
    "timber",
    "umber",
    "valley",
    "winter",
    "yellow",
    "zephyr",
]


def post(n: int) -> str:
    """A blog post as XEP-0277 has it (an Atom entry), about 1.5 KB."""
    rng = random.Random(n)
    body = " ".join(rng.choices(WORDS, k=150))
    return (
        f"<entry xmlns='{ATOM}'><title>Post {n}: {' '.join(rng.choices(WORDS, k=5))}</title>"
        f"<id>urn:uuid:{uuid.UUID(int=n + 1)}</id>"
        "<published>2026-01-01T00:00:00Z</published><updated>2026-01-02T00:00:00Z</updated>"
        "<author><name>alice</name><uri>xmpp:alice@localhost</uri></author>"
        f"<content type='text'>{body}</content>"
        f"<category term='{rng.choice(WORDS)}'/><category term='bench'/>"
        f"<link rel='replies' title='comments' href='xmpp:pubsub.localhost?;node={n}'/>"
        "</entry>"
    )


def item_id(n: int) -> str:
    """The id of the ``n``-th item published to a node."""
    return f"p{n:06d}"


# -- roostd, under cProfile when asked ------------------------------------------------------


def profiled_roostd_command() -> list[str]:
    """How to run roostd under cProfile (``--profiled-roostd FILE``)."""
    assert PROFILE is not None
    return [sys.executable, __file__, "--profiled-roostd", PROFILE]


def run_profiled_roostd(out: str, args: list[str]) -> None:
    """roostd itself, in this process, its stats written to ``out`` when it stops."""
    from roost.service.daemon import main as roostd_main

    profiler = cProfile.Profile()
    sys.argv = ["roostd", *args]
    profiler.enable()
    try:
        roostd_main()
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def start_roostd(launcher: RoostdLauncher, config: Path) -> Roostd:
    """A daemon on the bench's bus, logging at info (nothing per call)."""
    if PROFILE:
        with unittest.mock.patch.object(dbus_fixtures, "roostd_command", profiled_roostd_command):
            daemon = launcher.spawn("--log-level", "info", "--config", str(config))
    else:
        daemon = launcher.spawn("--log-level", "info", "--config", str(config))
    wait_for_name(launcher.bus_address, timeout=120)
    if daemon.process.poll() is not None:
        raise RuntimeError(f"roostd exited at start:\n{daemon.log_text()}")
    return daemon


# -- the bare service --------------------------------------------------------------------------


class BareItems(ServiceInterface):
    """Roost's GetItems signature answering the reply last loaded, from a plain method."""

    def __init__(self) -> None:
        super().__init__(PUBSUB_INTERFACE)
        self.answer: list[Any] = [[], {}]

    # No return annotation: dbus-fast reads ``None`` as a signature once annotations are
    # strings, and the method returns nothing.
    @dbus_method()
    def Load(self, items: DBusItems, metadata: DBusDict):  # type: ignore[no-untyped-def]
        """The reply the next GetItems gives."""
        self.answer = [items, metadata]

    @dbus_method()
    def GetItems(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, options: DBusDict
    ) -> Annotated[list[Any], DBusSignature("aa{sv}a{sv}")]:
        """The reply loaded last."""
        return self.answer


async def serve_bare(address: str) -> None:
    """Run the bare service until SIGTERM (the ``--bare ADDRESS`` mode of this script)."""
    bus = await MessageBus(bus_address=address).connect()
    tolerate_full_send_buffer(bus)
    bus.export(OBJECT_PATH, BareItems())
    await bus.request_name(BARE_NAME)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    bus.disconnect()


def wait_for_bare(address: str) -> None:
    """Block until the bare service owns its name."""
    command = ["gdbus", "wait", "--address", address, "--timeout", "30", BARE_NAME]
    subprocess.run(command, check=True, timeout=40)


# -- filling and synchronising --------------------------------------------------------------


async def fill(server: XmppServer, sizes: list[int]) -> list[str]:
    """New comments nodes of alice's holding ``sizes`` posts each; their names."""

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, EventHub())
    pubsub = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    service = server.pubsub_service
    started = time.perf_counter()

    async def one(count: int) -> str:
        node = f"{COMMENTS}dbreads-{uuid.uuid4().hex[:8]}"
        await pubsub.create_node("alice", service, node, {"pubsub#max_items": "max"})
        for start in range(0, count, 50):
            chunk = range(start, min(start + 50, count))
            await asyncio.gather(
                *(pubsub.publish("alice", service, node, item_id(n), post(n)) for n in chunk)
            )
        return node

    names: list[str] = []
    for start in range(0, len(sizes), 10):
        names += await asyncio.gather(*(one(count) for count in sizes[start : start + 10]))
    await sessions.close()
    progress(
        BENCH, f"{sum(sizes)} posts in {len(sizes)} nodes in {time.perf_counter() - started:.0f} s"
    )
    return names


async def synchronise(client: RoostClient, service: str, nodes: list[str], *, again: bool) -> None:
    """Every node of ``nodes`` synchronised (``again``: once more, with Cache.Sync)."""
    waiting = set(nodes)
    done = asyncio.get_running_loop().create_future()
    failed: list[str] = []

    def changed(_profile: str, _service: str, node: str, state: str) -> None:
        if node in waiting and state in ("completed", "error", "no_sync"):
            waiting.discard(node)
            if state != "completed":
                failed.append(f"{node}: {state}")
            if not waiting and not done.done():
                done.set_result(None)

    unsubscribe = await client.on_sync_state_changed(changed)
    for start in range(0, len(nodes), 20):
        chunk = nodes[start : start + 20]
        if again:
            await asyncio.gather(*(client.sync_node("bob", service, n) for n in chunk))
        else:
            await asyncio.gather(*(client.get_items("bob", service, n, max_items=1) for n in chunk))
    await asyncio.wait_for(done, 600)
    unsubscribe()
    if failed:
        raise RuntimeError(f"not synchronised: {failed[:5]}")
    await asyncio.sleep(0.5)  # whatever a sync's end sets off, before any timing


# -- the measurement ---------------------------------------------------------------------------

Call = Callable[[RoostClient, dict[str, Variant]], Awaitable[list[Any]]]


@dataclass
class Figures:
    """Milliseconds of each request shape's calls, by what answered."""

    db: dict[str, list[float]] = field(default_factory=dict)
    memo: dict[str, list[float]] = field(default_factory=dict)
    bare: dict[str, list[float]] = field(default_factory=dict)
    # Calls roostd answered from a current node: read from the database, reused.
    read: int = 0
    reused: int = 0


class Reader:
    """The client side: one request three ways, each reply checked."""

    def __init__(self, client: RoostClient, bare: RoostClient, service: str) -> None:
        self.client, self.bare, self.service = client, bare, service
        self.figures = Figures()
        # Every request the database answered, per node: none may be asked twice while
        # the node's recent answers live.
        self.asked: dict[str, set[tuple[Any, ...]]] = {}

    async def _timed(
        self, client: RoostClient, node: str, options: dict[str, Variant]
    ) -> tuple[float, list[Any]]:
        body = ["bob", self.service, node, options]
        started = time.perf_counter()
        reply = await client.call(PUBSUB_INTERFACE, "GetItems", "sssa{sv}", body)
        return (time.perf_counter() - started) * 1000, reply

    async def setup_read(self, node: str, **options: Variant) -> tuple[list[Any], dict[str, Any]]:
        """An untimed read (counted: it is a database read too)."""
        self._first_time(node, options)
        self.figures.read += 1
        _ms, (items, meta) = await self._timed(self.client, node, options)
        return items, meta

    def forget(self, node: str) -> None:
        """The node's recent answers are gone (it was synchronised again)."""
        self.asked.pop(node, None)

    def _first_time(self, node: str, options: dict[str, Variant]) -> None:
        key = tuple(sorted((k, repr(v.value)) for k, v in options.items()))
        seen = self.asked.setdefault(node, set())
        assert key not in seen, f"{node}: {key} asked twice"
        seen.add(key)

    async def read(
        self, shape: str, node: str, expected: list[str], count: int, **options: Variant
    ) -> tuple[list[Any], dict[str, Any]]:
        """One request asked of the database, of the bare service and of the memo."""
        self._first_time(node, options)
        ms, (items, meta) = await self._timed(self.client, node, options)
        check(shape, items, meta, expected, count)
        self.figures.db.setdefault(shape, []).append(ms)
        self.figures.read += 1
        await self.bare.call(PUBSUB_INTERFACE, "Load", "aa{sv}a{sv}", [items, meta])
        ms, (bare_items, _bare_meta) = await self._timed(self.bare, node, options)
        assert len(bare_items) == len(items)
        self.figures.bare.setdefault(shape, []).append(ms)
        ms, (again, again_meta) = await self._timed(self.client, node, options)
        check(shape, again, again_meta, expected, count)
        self.figures.memo.setdefault(shape, []).append(ms)
        self.figures.reused += 1
        return items, meta


def ids_of(items: list[dict[str, Variant]]) -> list[str]:
    """The item ids of a reply."""
    return [str(i["id"].value) for i in items]


def check(
    shape: str,
    items: list[dict[str, Variant]],
    meta: dict[str, Variant],
    expected: list[str],
    count: int,
) -> None:
    """The reply holds ``expected`` in that order, each parsed, from the cache, of ``count``."""
    got = ids_of(items)
    assert got == expected, (
        f"{shape}: {got[:3]}… ({len(got)}) instead of {expected[:3]}… ({len(expected)})"
    )
    assert meta["from_cache"].value is True, f"{shape}: not from the cache"
    assert meta["rsm_count"].value == count, (shape, meta["rsm_count"].value, count)
    assert all("parsed" in i and i["parsed"].value.startswith("{") for i in items), shape


async def walks(reader: Reader, node: str) -> None:
    """The node walked in pages of PAGE both ways, from WALKS starting items each."""
    ids = [item_id(n) for n in range(ITEMS)]
    u20 = Variant("u", PAGE)
    for walk in range(WALKS):
        # Forward: after the item just before the start (walk 0: from the first page).
        start = walk
        token = ""
        if walk:
            items, meta = await reader.setup_read(node, item_ids=Variant("as", [ids[walk - 1]]))
            assert ids_of(items) == [ids[walk - 1]]
            token = str(meta["rsm_last"].value)
        while start < ITEMS:
            page = ids[start : start + PAGE]
            _items, meta = await reader.read(
                "walk_after_20", node, page, ITEMS, max_items=u20, after=Variant("s", token)
            )
            token, start = str(meta["rsm_last"].value), start + PAGE
        # Backward: before the item just after the end (walk 0: from the last page).
        end = ITEMS - walk
        token = ""
        if walk:
            items, meta = await reader.setup_read(node, item_ids=Variant("as", [ids[end]]))
            token = str(meta["rsm_first"].value)
        while end > 0:
            page = ids[max(0, end - PAGE) : end]
            _items, meta = await reader.read(
                "walk_before_20", node, page, ITEMS, max_items=u20, before=Variant("s", token)
            )
            token, end = str(meta["rsm_first"].value), end - PAGE


async def by_ids(reader: Reader, node: str) -> None:
    """BY_ID_ROUNDS requests for PAGE random ids each, never the same set twice."""
    rng = random.Random(7)
    ids = [item_id(n) for n in range(ITEMS)]
    for _round in range(BY_ID_ROUNDS):
        chosen = rng.sample(range(ITEMS), PAGE)
        asked = [ids[n] for n in chosen]
        expected = [ids[n] for n in sorted(chosen)]
        await reader.read("item_ids_20", node, expected, PAGE, item_ids=Variant("as", asked))


async def round_robin(reader: Reader, nodes: list[str]) -> None:
    """``max_items`` PAGE of every node in turn, PASSES times, the nodes synchronised
    again between passes."""
    newest = [item_id(n) for n in range(NODE_ITEMS - PAGE, NODE_ITEMS)]
    for n in range(PASSES):
        if n:
            progress(BENCH, "synchronising the round-robin nodes again")
            await synchronise(reader.client, reader.service, nodes, again=True)
            for node in nodes:
                reader.forget(node)
        for node in nodes:
            await reader.read(
                "round_robin_20", node, newest, NODE_ITEMS, max_items=Variant("u", PAGE)
            )


async def measure(address: str, service: str, big: str, nodes: list[str]) -> Figures:
    """Every request shape, against the bare service and the memo."""
    client = await RoostClient.connect(address)
    reader = Reader(client, RoostClient(client.bus, BARE_NAME), service)
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("pages both ways", lambda: walks(reader, big)),
        ("random item_ids", lambda: by_ids(reader, big)),
        ("round-robin over the nodes", lambda: round_robin(reader, nodes)),
    ]
    for what, run in steps:
        progress(BENCH, what)
        await run()
    client.close()
    return reader.figures


def report(figures: Figures, counted: tuple[int, int]) -> None:
    """The figures, each beside its baselines, after the counts are checked."""
    read, reused = counted
    assert (read, reused) == (figures.read, figures.reused), (
        f"roostd read {read} answers from the database and reused {reused}; the bench "
        f"expected {figures.read} and {figures.reused}"
    )
    for shape, db in figures.db.items():
        bare, memo = figures.bare[shape], figures.memo[shape]
        db_median = spread(db)["median"]
        emit(
            BENCH,
            f"{shape}_db_vs_bare_median",
            db_median,
            "ms",
            baseline=spread(bare)["median"],
            ratio_at_most=BARE_RATIO,
            samples=len(db),
        )
        emit(
            BENCH,
            f"{shape}_db_vs_memo_median",
            db_median,
            "ms",
            baseline=spread(memo)["median"],
            ratio_at_most=MEMO_RATIO,
            samples=len(db),
        )
        name, value = upper(db)
        emit(BENCH, f"{shape}_db_{name}", value, "ms", baseline=upper(bare)[1], samples=len(db))
        emit(
            BENCH,
            f"{shape}_memo_median",
            spread(memo)["median"],
            "ms",
            baseline=spread(bare)["median"],
            samples=len(memo),
        )
        name, value = upper(memo)
        emit(BENCH, f"{shape}_memo_{name}", value, "ms", baseline=upper(bare)[1], samples=len(memo))


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    """Run the measurement (or, with ``--bare ADDRESS``, the bare service)."""
    if sys.argv[1:2] == ["--bare"]:
        asyncio.run(serve_bare(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--profiled-roostd"]:
        run_profiled_roostd(sys.argv[2], sys.argv[3:])
        return
    began = time.perf_counter()
    with ejabberd_world("roost-bench-db-reads-", max_items_per_node=100_000) as world:
        bus, server = world.bus, world.server
        bare: subprocess.Popen[bytes] | None = None
        try:
            names = asyncio.run(fill(server, [ITEMS] + [NODE_ITEMS] * NODES))
            big, nodes = names[0], names[1:]
            daemon = start_roostd(world.launcher, world.config)

            async def cache_all() -> None:
                client = await RoostClient.connect(bus.address)
                jid, password, options = server.credentials("bob")
                await client.create_profile("bob", jid, password, options)
                await client.connect_profile("bob")
                started = time.perf_counter()
                await synchronise(client, server.pubsub_service, names, again=False)
                progress(
                    BENCH, f"{len(names)} nodes cached in {time.perf_counter() - started:.1f} s"
                )
                client.close()

            asyncio.run(cache_all())
            bare = subprocess.Popen([sys.executable, __file__, "--bare", bus.address])
            wait_for_bare(bus.address)
            figures = asyncio.run(measure(bus.address, server.pubsub_service, big, nodes))
            daemon.terminate(60)
            found = COUNTS.findall(daemon.log_text())
            assert found, "roostd logged no counts of its cached answers"
            report(figures, (int(found[-1][0]), int(found[-1][1])))
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait()
    progress(BENCH, f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
