"""Cache benchmark: cached GetItems, sync rate, search and memory, each beside a baseline.

Prints one JSON object a line (bench, metric, value, unit, and where it compares:
baseline, ratio = value / baseline); progress goes to stderr. See docs/performance.md
for what each figure means. ``ROOST_BENCH_SMALL=1`` lowers every size for a quick run.

Everything runs on loopback in one run: a private dbus-daemon, Prosody and ejabberd, and
``roostd`` as a real process. The client is this process (or, for the throughput, a few
processes of it started with ``multiprocessing``); the bare service is this script run
with ``--bare ADDRESS FILE``. The searches at growing sizes run on SQLite and on
PostgreSQL (a throwaway cluster, ``bench/postgres_cluster.py``), the same rows in both,
each figure named for its database; PostgreSQL's carry SQLite's as their baseline.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import unittest.mock
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.aio.message_bus import _MessageWriter
from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method

from bench.ejabberd_fill import fill_ejabberd_node
from bench.postgres_cluster import analyse, bench_cluster, copy_items, settings_text
from roost.bridge.client import RoostClient
from roost.bridge.constants import BUS_NAME, OBJECT_PATH, PUBSUB_INTERFACE
from roost.service.cache.microblog import parse_microblog_entry
from roost.service.cache.parsers import ParserContext
from roost.service.cache.stored_form import payload_of, stored_forms
from roost.service.cache.sync import STORE_BATCH
from roost.service.events import EventHub
from roost.service.pubsub.model import PubsubItem
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database
from roost.storage.fulltext import FTS_TABLE, SQLITE_FTS_DDL, SQLITE_FTS_DROP
from tests.fixtures import dbus as dbus_fixtures
from tests.fixtures.dbus import Roostd, RoostdLauncher, start_bus, stop_bus, wait_for_name
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.xmpp import EjabberdServer, ProsodyServer, XmppServer, free_port

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
PROSODY_ITEMS = 200 if SMALL else 1_000
SYNC_ITEMS = 2_000 if SMALL else 10_000
RSS_ITEMS = 10_000 if SMALL else 100_000
SEARCH_SIZES = (10_000, 100_000) if SMALL else (10_000, 100_000, 1_000_000)
LATENCY_ROUNDS, WHOLE_ROUNDS, SEARCH_ROUNDS = 200, 60, 40
CLIENT_PROCESSES, IN_FLIGHT_EACH, THROUGHPUT_SECONDS = 4, 16, 2.0 if SMALL else 5.0
ATOM = "http://www.w3.org/2005/Atom"
PUBSUB = "http://jabber.org/protocol/pubsub"
COMMENTS = "urn:xmpp:microblog:0:comments/"
BARE_NAME = "org.roost.BenchBareItems"
AUTHORS, RARE_EVERY = 200, 250  # an author is in 0.5% of the items, "zanzibar" in 0.4%


def emit(metric: str, value: float, unit: str, **compare: float) -> None:
    """Print one result line."""
    line: dict[str, Any] = {"bench": "cache", "metric": metric, "value": round(value, 3)}
    line["unit"] = unit
    line.update({k: round(v, 3) for k, v in compare.items()})
    print(json.dumps(line), flush=True)


def compare(metric: str, value: float, unit: str, baseline: float) -> None:
    """Print a figure beside its baseline."""
    emit(metric, value, unit, baseline=baseline, ratio=value / baseline if baseline else 0.0)


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[cache] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def entry(n: int) -> str:
    """A small XEP-0277 comment (an Atom entry), about 300 bytes."""
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{n}</id><title>Comment {n}</title>"
        f"<author><name>user{n % AUTHORS}</name><uri>xmpp:user{n % AUTHORS}@localhost</uri>"
        f"</author><content type='text'>Body of comment {n}, a few words long.</content>"
        "<published>2026-01-01T00:00:00Z</published></entry>"
    )


# -- servers, daemons, clients ----------------------------------------------------------


async def publisher(server: XmppServer) -> tuple[SessionManager, PubsubService]:
    """A service-level client for alice, to fill nodes with many publishes in flight."""

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, EventHub())
    pubsub = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    return sessions, pubsub


async def fill(
    pubsub: PubsubService, server: XmppServer, count: int, budget: float = math.inf
) -> tuple[str, int]:
    """A new comments node with ``count`` items (fewer if ``budget`` seconds run out)."""
    node = f"{COMMENTS}bench-{uuid.uuid4().hex[:8]}"
    await pubsub.create_node("alice", server.pubsub_service, node, {"pubsub#max_items": "max"})
    started, done = time.perf_counter(), 0
    while done < count and time.perf_counter() - started < budget:
        chunk = range(done, min(done + 100, count))
        await asyncio.gather(
            *(
                pubsub.publish("alice", server.pubsub_service, node, f"i{n:06d}", entry(n))
                for n in chunk
            )
        )
        done = chunk.stop
    progress(f"{server.kind}: {done} items published in {time.perf_counter() - started:.1f} s")
    return node, done


def start_roostd(
    launcher: RoostdLauncher, config: Path, database: Path | None = None, url: str | None = None
) -> Roostd:
    """A daemon on the bench's bus, quiet (debug logging would slow every call), on the
    SQLite file ``database`` or the database at ``url``."""
    # The launcher names an SQLite file first; a --database given after it wins.
    extra = ("--database", url) if url is not None else ()
    daemon = launcher.spawn(
        "--log-level", "warning", "--config", str(config), *extra, database=database
    )
    wait_for_name(launcher.bus_address, timeout=600)
    if daemon.process.poll() is not None:
        raise RuntimeError(f"roostd exited at start:\n{daemon.log_text()}")
    return daemon


def stop_roostd(daemon: Roostd) -> None:
    """SIGTERM and wait, so that the next daemon can take the name."""
    if daemon.terminate(60) != 0:
        progress(f"roostd exited with {daemon.process.returncode}:\n{daemon.log_text()[-3000:]}")


async def profile(client: RoostClient, name: str, server: XmppServer) -> None:
    """Create the profile ``name`` as bob on ``server`` and connect it."""
    jid, password, options = server.credentials("bob")
    await client.create_profile(name, jid, password, options)
    await client.connect_profile(name)


async def sync_node(client: RoostClient, name: str, service: str, node: str) -> float:
    """Meet ``node`` with a GetItems (it is analysed, then synced); seconds to ``completed``."""
    done = asyncio.get_running_loop().create_future()

    def changed(_profile: str, _service: str, changed_node: str, state: str) -> None:
        if changed_node == node and state in ("completed", "error", "no_sync") and not done.done():
            done.set_result((state, time.perf_counter()))

    unsubscribe = await client.on_sync_state_changed(changed)
    started = time.perf_counter()
    await client.get_items(name, service, node, max_items=1)
    state, ended = await asyncio.wait_for(done, 900)
    unsubscribe()
    if state != "completed":
        raise RuntimeError(f"{node}: {await client.get_node_state(name, service, node)}")
    return float(ended - started)


def get_items_call(
    client: RoostClient, name: str, service: str, node: str, **options: Variant
) -> Callable[[], Awaitable[list[Any]]]:
    """A GetItems call with its options built once (the client side's cost kept equal)."""
    body = [name, service, node, options]
    return lambda: client.call(PUBSUB_INTERFACE, "GetItems", "sssa{sv}", body)


async def paired(
    calls: dict[str, Callable[[], Awaitable[list[Any]]]], rounds: int
) -> dict[str, list[float]]:
    """Milliseconds of each call, the calls taking turns in each round (after warm-up)."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    for n in range(rounds + 5):
        for label, call in calls.items():
            started = time.perf_counter()
            await call()
            if n >= 5:
                times[label].append((time.perf_counter() - started) * 1000)
    return times


def compare_latency(metric: str, times: list[float], baseline: list[float]) -> None:
    """Median and p99 of ``times`` beside those of ``baseline``."""
    compare(f"{metric}_median", statistics.median(times), "ms", statistics.median(baseline))
    compare(f"{metric}_p99", percentile(times, 0.99), "ms", percentile(baseline, 0.99))


# -- the bare service and the throughput clients ----------------------------------------


def to_json(value: Variant) -> list[Any]:
    """A variant of a GetItems reply as [signature, value]."""
    return [value.signature, value.value]


class BareItems(ServiceInterface):
    """The physical limit: Roost's GetItems signature, a prepared answer, no work."""

    def __init__(self, page: list[Any], whole: list[Any]) -> None:
        super().__init__(PUBSUB_INTERFACE)
        self.page, self.whole = page, whole

    @dbus_method()
    def GetItems(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, options: DBusDict
    ) -> Annotated[list[Any], DBusSignature("aa{sv}a{sv}")]:
        """The 20-item page when ``max_items`` is given, else the whole node."""
        return self.page if "max_items" in options else self.whole


class WaitingSocket:
    """The bus socket, a full send buffer reported as nothing sent.

    dbus-fast 5.2's writer takes EAGAIN from ``send`` for a lost connection and drops it;
    the bare service, fast enough to fill the buffer under load, would die of it. Sending
    nothing makes the writer wait until the socket is writable, as it does after a
    partial send.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        """Send what fits; 0 when nothing does."""
        try:
            sent: int = self._sock.send(data)
        except BlockingIOError:
            return 0
        return sent


def fix_writer() -> None:
    """Give every dbus-fast bus of this process a :class:`WaitingSocket`."""
    original = _MessageWriter.__init__

    def init(self: _MessageWriter, bus: Any) -> None:
        original(self, bus)
        self.sock = WaitingSocket(self.sock)  # type: ignore[assignment]

    _MessageWriter.__init__ = init  # type: ignore[method-assign]


def fixed_roostd_command() -> list[str]:
    """How to run roostd with dbus-fast's writer fixed (``--fixed-roostd``)."""
    return [sys.executable, __file__, "--fixed-roostd"]


def run_fixed_roostd(args: list[str]) -> None:
    """roostd itself, in this process, with the writer fixed."""
    from roost.service.daemon import main as roostd_main

    fix_writer()
    sys.argv = ["roostd", *args]
    roostd_main()


async def serve_bare(address: str, answer_file: str) -> None:
    """Run the bare service until SIGTERM (the ``--bare`` mode of this script)."""
    data = json.loads(await asyncio.to_thread(Path(answer_file).read_text))
    page, whole = (
        [
            [{k: Variant(*v) for k, v in i.items()} for i in items],
            {k: Variant(*v) for k, v in meta.items()},
        ]
        for items, meta in (data["page"], data["whole"])
    )
    fix_writer()
    bus = await MessageBus(bus_address=address).connect()
    bus.export(OBJECT_PATH, BareItems(page, whole))
    await bus.request_name(BARE_NAME)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    bus.disconnect()


def wait_for_bare(address: str) -> None:
    """Block until the bare service owns its name."""
    command = ["gdbus", "wait", "--address", address, "--timeout", "30", BARE_NAME]
    subprocess.run(command, check=True, timeout=40)


async def hammer(address: str, destination: str, body: list[Any], start_at: float) -> int:
    """Calls completed by IN_FLIGHT_EACH loops from ``start_at`` for THROUGHPUT_SECONDS."""
    bus = await MessageBus(bus_address=address).connect()
    options = {"max_items": Variant("u", 20)}
    done = 0

    def message() -> Message:
        return Message(
            destination=destination,
            path=OBJECT_PATH,
            interface=PUBSUB_INTERFACE,
            member="GetItems",
            signature="sssa{sv}",
            body=[*body, options],
        )

    reply = await bus.call(message())
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + THROUGHPUT_SECONDS

    async def loop() -> None:
        nonlocal done
        while time.time() < deadline:
            reply = await bus.call(message())
            assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, (
                reply.error_name,
                reply.body,
            )
            if time.time() <= deadline:
                done += 1

    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT_EACH)))
    bus.disconnect()
    return done


def hammer_process(address: str, destination: str, body: list[Any], start_at: float) -> int:
    """One client process of the throughput figure; -1 when the service fell off the bus."""
    try:
        return asyncio.run(hammer(address, destination, body, start_at))
    except AssertionError as exc:
        progress(f"{destination} failed: {exc}")
        return -1


def throughput(address: str, destination: str, body: list[Any]) -> float:
    """Calls/s of CLIENT_PROCESSES processes with IN_FLIGHT_EACH calls in flight each.

    -1 when a call failed (the service lost its bus connection).
    """
    context = multiprocessing.get_context("spawn")  # a fork would inherit a running loop
    with context.Pool(CLIENT_PROCESSES) as pool:
        start_at = time.time() + 4.0  # the processes import and connect meanwhile
        args = [(address, destination, body, start_at)] * CLIENT_PROCESSES
        counts = pool.starmap(hammer_process, args)
    return -1.0 if min(counts) < 0 else sum(counts) / THROUGHPUT_SECONDS


# -- the measurements -------------------------------------------------------------------


async def reads(address: str, prosody: XmppServer, bare_answer: Path) -> str:
    """Cached GetItems against the server path; the bare service's answer is written."""
    sessions, pubsub = await publisher(prosody)
    node, _count = await fill(pubsub, prosody, PROSODY_ITEMS)
    await sessions.close()
    client = await RoostClient.connect(address)
    await profile(client, "bob", prosody)
    service = prosody.pubsub_service
    await sync_node(client, "bob", service, node)
    last20 = Variant("u", 20)
    cached = get_items_call(client, "bob", service, node, max_items=last20)
    server = get_items_call(
        client, "bob", service, node, max_items=last20, use_cache=Variant("b", False)
    )
    whole_cached = get_items_call(client, "bob", service, node)
    whole_server = get_items_call(client, "bob", service, node, use_cache=Variant("b", False))
    for one, other, size in ((cached, server, 20), (whole_cached, whole_server, PROSODY_ITEMS)):
        (items, meta), (fresh, fresh_meta) = await one(), await other()
        assert meta["from_cache"].value and not fresh_meta["from_cache"].value
        ids = [i["id"].value for i in items]
        assert ids == [i["id"].value for i in fresh] and len(ids) == size, (len(ids), size)
    progress("GetItems: cache against Prosody")
    times = await paired({"cached": cached, "server": server}, LATENCY_ROUNDS)
    compare_latency("get_items_20_cached_vs_server", times["cached"], times["server"])
    times = await paired({"cached": whole_cached, "server": whole_server}, WHOLE_ROUNDS)
    compare_latency(f"get_items_{PROSODY_ITEMS}_cached_vs_server", times["cached"], times["server"])

    answer = {}
    for name, call in (("page", cached), ("whole", whole_cached)):
        items, meta = await call()
        answer[name] = [
            [{k: to_json(v) for k, v in i.items()} for i in items],
            {k: to_json(v) for k, v in meta.items()},
        ]
    await asyncio.to_thread(bare_answer.write_text, json.dumps(answer))
    client.close()
    return node


async def against_bare(address: str, service: str, node: str) -> None:
    """Cached GetItems beside the bare service's, 20 items and the whole node."""
    client = await RoostClient.connect(address)
    last20 = Variant("u", 20)
    cached = get_items_call(client, "bob", service, node, max_items=last20)
    # The same connection and client code as the cached calls, another destination.
    bare_call = get_items_call(
        RoostClient(client.bus, BARE_NAME), "bob", service, node, max_items=last20
    )
    progress("GetItems: cache against the bare service")
    times = await paired({"cached": cached, "bare": bare_call}, LATENCY_ROUNDS)
    compare_latency("get_items_20_cached_vs_bare", times["cached"], times["bare"])
    whole = get_items_call(client, "bob", service, node)
    bare_whole = get_items_call(RoostClient(client.bus, BARE_NAME), "bob", service, node)
    times = await paired({"cached": whole, "bare": bare_whole}, WHOLE_ROUNDS)
    compare_latency(f"get_items_{PROSODY_ITEMS}_cached_vs_bare", times["cached"], times["bare"])
    client.close()


def throughputs(launcher: RoostdLauncher, config: Path, prosody: XmppServer, node: str) -> None:
    """Calls/s of the running roostd, of the bare service, and if roostd fell, of a fixed one."""
    address, body = launcher.bus_address, ["bob", prosody.pubsub_service, node]
    metric = f"get_items_20_cached_calls_per_s_{CLIENT_PROCESSES * IN_FLIGHT_EACH}_in_flight"
    progress(f"throughput, {CLIENT_PROCESSES} processes x {IN_FLIGHT_EACH} in flight")
    bare = throughput(address, BARE_NAME, body)
    roost = throughput(address, BUS_NAME, body)
    if roost >= 0:
        compare(metric, roost, "calls/s", bare)
        return
    emit(metric, 0.0, "calls/s", baseline=bare, ratio=0.0)
    progress("roostd lost its bus connection under load; again with dbus-fast's writer fixed")
    for daemon in launcher.started:
        daemon.terminate(60)
    with unittest.mock.patch.object(dbus_fixtures, "roostd_command", fixed_roostd_command):
        daemon = start_roostd(launcher, config)
    asyncio.run(resync(address, prosody, node))
    roost = throughput(address, BUS_NAME, body)
    compare(f"{metric}_writer_fixed", roost, "calls/s", bare)
    stop_roostd(daemon)


async def resync(address: str, prosody: XmppServer, node: str) -> None:
    """The reads' node, cached by a new daemon."""
    client = await RoostClient.connect(address)
    await profile(client, "bob", prosody)
    await sync_node(client, "bob", prosody.pubsub_service, node)
    client.close()


async def upsert_rate(path: Path, items: list[PubsubItem]) -> float:
    """Items/s of ItemStore.upsert_items on the sync's rows, in the sync's batches."""
    db = await Database.open(f"sqlite+aiosqlite:///{path}")
    await db.profiles.create_profile("p", "p@localhost", "", {})
    node = await db.nodes.get_or_create_node("p", "pubsub.localhost", "n")
    context = ParserContext("p", "pubsub.localhost", "n")
    rows = await stored_forms(items, parse_microblog_entry, context)
    started = time.perf_counter()
    for start in range(0, len(rows), STORE_BATCH):
        await db.items.upsert_items(node.id, rows[start : start + STORE_BATCH])
    elapsed = time.perf_counter() - started
    await db.close()
    return len(rows) / elapsed


async def fetch_rate(pubsub: PubsubService, server: XmppServer, node: str) -> float:
    """Items/s of walking ``node`` in the sync's pages, cache bypassed, nothing stored."""
    started, got = time.perf_counter(), 0
    async for page in pubsub.server.fetch_all_items("alice", server.pubsub_service, node):
        got += len(page)
    return got / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid``, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sync_rate(address: str, ejabberd: XmppServer, workdir: Path, pid: int) -> None:
    """A SYNC_ITEMS node synced from ejabberd, beside the store's and the server's rates."""
    sessions, pubsub = await publisher(ejabberd)
    node, count = await fill(pubsub, ejabberd, SYNC_ITEMS)
    fetch = await fetch_rate(pubsub, ejabberd, node)
    await sessions.close()
    jid = ejabberd.jid("alice")
    items = [
        PubsubItem(f"i{n:06d}", jid, f"<item xmlns='{PUBSUB}' id='i{n:06d}'>{entry(n)}</item>")
        for n in range(count)
    ]
    store = await upsert_rate(workdir / "upsert.sqlite", items)
    client = await RoostClient.connect(address)
    await profile(client, "bobej", ejabberd)
    progress(f"syncing {count} items")
    cpu = cpu_seconds(pid)
    seconds = await sync_node(client, "bobej", ejabberd.pubsub_service, node)
    cpu = cpu_seconds(pid) - cpu
    state = await client.get_node_state("bobej", ejabberd.pubsub_service, node)
    assert state["item_count"] == count, state
    label = f"sync_{count // 1000}k"
    compare(f"{label}_rate", count / seconds, "items/s", store)
    compare(f"{label}_rate_vs_server_fetch", count / seconds, "items/s", fetch)
    # What roostd itself needs: items per second of its own CPU time (all its threads).
    compare(f"{label}_items_per_roostd_cpu_s", count / cpu, "items/s", store)
    client.close()


async def peak_rss(
    launcher: RoostdLauncher, config: Path, ejabberd: EjabberdServer, wanted: int
) -> None:
    """VmHWM of a fresh roostd whose only work is syncing one large node."""
    sessions, pubsub = await publisher(ejabberd)
    node, _none = await fill(pubsub, ejabberd, 0)
    await sessions.close()
    # Publishing 100,000 items one by one would take ejabberd about 12 minutes.
    started = time.perf_counter()
    payloads = ((f"i{n:06d}", entry(n)) for n in range(wanted))
    count = await fill_ejabberd_node(ejabberd, node, ejabberd.jid("alice"), payloads)
    progress(f"ejabberd: {count} items written in {time.perf_counter() - started:.1f} s")
    daemon = start_roostd(launcher, config)
    client = await RoostClient.connect(launcher.bus_address)
    await profile(client, "bobej", ejabberd)
    status = Path(f"/proc/{daemon.process.pid}/status")

    def kib(field: str) -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field))
        return int(line.split()[1]) / 1024

    emit("roostd_rss_before_sync", kib("VmRSS:"), "MiB")
    progress(f"syncing {count} items for the peak RSS")
    seconds = await sync_node(client, "bobej", ejabberd.pubsub_service, node)
    label = f"{count // 1000}k"
    emit(f"sync_{label}_rate", count / seconds, "items/s")
    compare(f"sync_{label}_peak_rss", kib("VmHWM:"), "MiB", 250.0)
    client.close()
    stop_roostd(daemon)


# -- search at growing sizes ------------------------------------------------------------


class SearchCorpus:
    """Deterministic comment rows for bulk loading, in the form a sync stores them."""

    def __init__(self, seed: int = 5) -> None:
        rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ren", "tas", "vo", "quel", "dor", "pe", "su", "ni"]
        words = sorted({"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(6000)})
        weights = [1 / (rank + 1) for rank in range(len(words))]
        self.paragraphs = [" ".join(rng.choices(words, weights, k=30)) for _ in range(2000)]
        sample = PubsubItem("x", "", f"<item xmlns='{PUBSUB}' id='x'>{entry(0)}</item>")
        payload = payload_of(sample.xml)
        assert payload is not None
        self.template = parse_microblog_entry(payload)

    def rows(self, start: int, stop: int, node_ids: list[int]) -> Iterator[tuple[Any, ...]]:
        """Rows ``start``…``stop - 1``, a thousand to a node in turn."""
        for n in range(start, stop):
            author = f"user{n % AUTHORS}"
            title = f"Comment {n}"
            content = self.paragraphs[n * 7919 % len(self.paragraphs)]
            if n % RARE_EVERY == 0:
                content += " zanzibar"
            stamp = 1_700_000_000.0 + n
            xml = (
                f"<item xmlns='{PUBSUB}' id='c{n:07d}'><entry xmlns='{ATOM}'>"
                f"<id>urn:uuid:{n}</id><title>{title}</title><author><name>{author}</name>"
                f"<uri>xmpp:{author}@localhost</uri></author><content type='text'>{content}"
                "</content><published>2023-11-14T22:13:20Z</published></entry></item>"
            )
            parsed = dict(self.template, title=title, content=content, author=author)
            parsed.update(author_jid=f"{author}@localhost", id=f"urn:uuid:{n}")
            text = f"{title}\n{content}\n{author}\n{author}@localhost"
            node_id = node_ids[(n // 1000) % len(node_ids)]
            yield (
                node_id,
                f"c{n:07d}",
                "alice@localhost",
                n,
                xml,
                json.dumps(parsed),
                text,
                stamp,
                stamp,
            )


async def search_database(url: str) -> list[int]:
    """A new database at the current schema: 10 profiles of 10 nodes; the node ids."""
    db = await Database.open(url)
    ids = []
    for p in range(10):
        await db.profiles.create_profile(f"p{p}", f"p{p}@localhost", "", {})
        for n in range(10):
            node = await db.nodes.get_or_create_node(f"p{p}", "pubsub.localhost", f"{COMMENTS}{n}")
            ids.append(node.id)
    await db.close()
    return ids


def grow(path: Path, corpus: SearchCorpus, node_ids: list[int], start: int, stop: int) -> None:
    """SQLite: bulk-load rows without the FTS triggers, then put the index back and
    rebuild it."""
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for ddl in SQLITE_FTS_DROP:
        conn.execute(ddl)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, parsed, "
        "search_text, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        corpus.rows(start, stop, node_ids),
    )
    conn.execute("COMMIT")
    for ddl in SQLITE_FTS_DDL:
        conn.execute(ddl)
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    conn.close()
    progress(f"search database at {stop} items in {time.perf_counter() - began:.0f} s")


async def grow_postgres(
    url: str, corpus: SearchCorpus, node_ids: list[int], start: int, stop: int
) -> None:
    """PostgreSQL: COPY the same rows (the server keeps the full-text vector and its GIN
    index as they arrive)."""
    began = time.perf_counter()
    # The rows' text is ASCII: PostgreSQL's indexed form of it (no diacritics) is itself.
    await copy_items(url, corpus.rows(start, stop, node_ids))
    progress(f"PostgreSQL search database at {stop} items in {time.perf_counter() - began:.0f} s")


async def index_author(url: str) -> None:
    """The expression index the microblog analyser asks for, as after a real sync."""
    db = await Database.open(url, check_fulltext=False)
    await db.items.ensure_parsed_key_index("author_jid")
    await db.close()


async def search_latency(
    address: str, size: int, database: str, baseline: dict[str, float] | None = None
) -> dict[str, float]:
    """Median and p99 of an FTS term and an indexed equality through the bus, named for
    ``database``; returns them by metric. ``baseline``: SQLite's, shown beside them."""
    client = await RoostClient.connect(address)
    label = f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"
    queries: dict[str, Callable[[int], dict[str, Any]]] = {
        "fts": lambda n: {"fts": "zanzibar", "limit": 20, "offset": n % 2},
        "parsed_eq": lambda n: {
            "parsed": [{"path": "author_jid", "op": "eq", "value": f"user{n % AUTHORS}@localhost"}],
            "limit": 20,
        },
    }
    found: dict[str, float] = {}
    for name, query in queries.items():
        times = []
        for n in range(SEARCH_ROUNDS + 2):
            started = time.perf_counter()
            hits = await client.search(**query(n))
            if n >= 2:
                times.append((time.perf_counter() - started) * 1000)
            assert len(hits) == 20 or (name == "parsed_eq" and hits), (name, len(hits))
        found[f"{name}_median"] = statistics.median(times)
        found[f"{name}_p99"] = percentile(times, 0.99)
    client.close()
    for key, value in found.items():
        name, _sep, stat = key.rpartition("_")
        figure(f"search_{name}_{label}_{database}_{stat}", value, "ms", baseline, key)
    return found


def figure(
    metric: str, value: float, unit: str, baseline: dict[str, float] | None, key: str
) -> None:
    """Print a figure, beside ``baseline[key]`` when there is a baseline."""
    if baseline is None:
        emit(metric, value, unit)
    else:
        compare(metric, value, unit, baseline[key])


def searches_on(
    launcher: RoostdLauncher,
    config: Path,
    size: int,
    database: str,
    where: dict[str, Any],
    baseline: dict[str, float] | None,
) -> dict[str, float]:
    """Start a fresh roostd on one database (``where``: start_roostd's ``database`` or
    ``url``), time its start and its searches; the figures by metric."""
    started = time.perf_counter()
    daemon = start_roostd(launcher, config, **where)
    found = {"start": time.perf_counter() - started}
    figure(f"roostd_start_{size // 1000}k_items_{database}", found["start"], "s", baseline, "start")
    found.update(asyncio.run(search_latency(launcher.bus_address, size, database, baseline)))
    stop_roostd(daemon)
    return found


def searches(
    launcher: RoostdLauncher, config: Path, workdir: Path, cluster: PostgresServer
) -> None:
    """Grow an SQLite and a PostgreSQL database through SEARCH_SIZES, the same rows in
    both; at each size, a fresh roostd on each answers searches."""
    path, corpus, loaded = workdir / "search.sqlite", SearchCorpus(), 0
    sqlite_url = f"sqlite+aiosqlite:///{path}"
    node_ids = asyncio.run(search_database(sqlite_url))
    with cluster.database() as pg_url:
        assert asyncio.run(search_database(pg_url)) == node_ids, "the databases' nodes differ"
        for size in SEARCH_SIZES:
            grow(path, corpus, node_ids, loaded, size)
            asyncio.run(grow_postgres(pg_url, corpus, node_ids, loaded, size))
            loaded = size
            asyncio.run(index_author(sqlite_url))
            asyncio.run(index_author(pg_url))
            # As autovacuum would after such a write: statistics (the new expression
            # index's included) and the visibility map.
            asyncio.run(analyse(pg_url))
            on_sqlite = searches_on(launcher, config, size, "sqlite", {"database": path}, None)
            searches_on(launcher, config, size, "postgresql", {"url": pg_url}, on_sqlite)


# -- the run ----------------------------------------------------------------------------


def main() -> None:
    """Run every measurement (or, with ``--bare ADDRESS FILE``, the bare service)."""
    if sys.argv[1:2] == ["--bare"]:
        asyncio.run(serve_bare(sys.argv[2], sys.argv[3]))
        return
    if sys.argv[1:2] == ["--fixed-roostd"]:
        run_fixed_roostd(sys.argv[2:])
        return
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="roost-bench-cache-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        servers: list[XmppServer] = []
        bus = start_bus(workdir / "bus")
        (workdir / "roostd").mkdir()
        launcher = RoostdLauncher(workdir / "roostd", bus.address)
        config = workdir / "roost.toml"
        config.write_text("[cache]\nmax_items_per_node = 1000000\n")
        try:
            for kind in ("prosody", "ejabberd"):
                (workdir / kind).mkdir(mode=0o755)
            prosody = ProsodyServer(kind="prosody", data_dir=workdir / "prosody", port=free_port())
            servers.append(prosody)
            prosody.setup()
            ejabberd = EjabberdServer(
                kind="ejabberd", data_dir=workdir / "ejabberd", port=free_port()
            )
            servers.append(ejabberd)
            ejabberd.setup()
            prosody.start()
            start_roostd(launcher, config)
            node = asyncio.run(reads(bus.address, prosody, workdir / "bare.json"))
            command = [sys.executable, __file__, "--bare", bus.address, str(workdir / "bare.json")]
            bare = subprocess.Popen(command)
            try:
                wait_for_bare(bus.address)
                asyncio.run(against_bare(bus.address, prosody.pubsub_service, node))
                throughputs(launcher, config, prosody, node)
            finally:
                bare.terminate()
                bare.wait()
            launcher.stop_all()
            daemon = start_roostd(launcher, config)
            asyncio.run(sync_rate(bus.address, ejabberd, workdir, daemon.process.pid))
            stop_roostd(daemon)
            asyncio.run(peak_rss(launcher, config, ejabberd, RSS_ITEMS))
            for server in servers:
                server.stop()
            servers.clear()
            with bench_cluster() as cluster:
                progress(f"PostgreSQL cluster up ({settings_text()})")
                searches(launcher, config, workdir, cluster)
        finally:
            launcher.stop_all()
            for server in servers:
                server.stop()
            stop_bus(bus)
    progress(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
