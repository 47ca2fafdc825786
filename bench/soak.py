"""Soak: 32 bus clients mixing every kind of call at one roostd for 10 minutes while
pubsub events arrive; throughput, latency, resident memory over time, errors, data lost.

The world, on loopback: a private dbus-daemon, ejabberd, and ``roostd`` as a real process
(``--log-level info``) on SQLite, or with ``--database postgresql`` on a throwaway
PostgreSQL cluster set up as a deployment would be (``bench/postgres_cluster.py``).
Before roostd starts, independent clients build what a person would have: alice owns
NODES XEP-0277 comments nodes on the pubsub service of ITEMS comments each (created over
XMPP, filled through ejabberd's tables, ``bench/ejabberd_fill.py``), and the two accounts
the profiles use each have FRIENDS contacts (mutual presence subscriptions). roostd then
gets two profiles, connects them, and synchronises every node for both (2 x NODES x
ITEMS cached items); the soak starts when the last sync has completed.

During the soak (``--duration``, 600 s; 60 s with ``ROOST_BENCH_SMALL=1``):

- CLIENTS bus clients, each its own D-Bus connection (dbus-fast, all in this process),
  call one after the other without pause (closed loop: the load is whatever roostd
  keeps up with), or with ``--rate R`` at R calls/s between them (open loop: each client
  has a call due every CLIENTS/R seconds and its latency counts from when it was due, so
  time spent waiting behind a slow answer is in the figure, as a frontend would feel it);
  each call drawn at random (by WEIGHTS):
  ``GetItems`` from the cache (pages walked forward with ``after`` and backward with
  ``before``, each page's token from the previous reply; random ``item_ids``; the newest
  page), across both profiles and every node; ``SetValue`` of a value that changes each
  time, and ``GetValues`` reading back what this client wrote last; ``Search`` (a full
  text term, or a filter on the parsed author, restricted to a profile and some nodes);
  contact changes (``Add`` of a new JID, waiting for its ``ContactChanged``, then
  ``Remove``, waiting again). Every answer is checked: a wrong one counts as an error.
- alice, from an independent XMPP client, publishes a new item every PUBLISH_EVERY
  seconds to the nodes in turn; a listening bus client counts the ``ItemsEvent`` signals
  and the item ids they carry, for each profile.
- Every SAMPLE_EVERY seconds: roostd's RSS (``VmRSS``), the calls made so far, the
  events received.

At the end: throughput (calls/s), p50 and p99 latency per kind of call as the clients
saw them, errors by name (target 0); RSS: its growth from the mean of the second minute
to that of the last (target 10 %; windows of a quarter of the run when it is shorter
than 4 minutes), the first minute being the warm-up in which the daemon's bounded
memories fill (the growth from it is reported too, without a target), the
least-squares slope after the warm-up and over the last half; data lost (target 0): every
acknowledged ``SetValue`` read back, every published item found in each profile's cache
(``Search`` by ids) and announced by an ``ItemsEvent``, each node's item count, the
profiles' contacts as they were (the added ones gone, the friends kept). The RSS curve
is written as an SVG chart: docs/soak-rss.svg (docs/soak-rss-postgresql.svg on PostgreSQL)
for a run of the full length, else bench/results/soak-rss.svg (``--plot`` chooses).

``--memory-trace DIR`` runs roostd with ``ROOST_MEMORY_TRACE=DIR`` (see
``roost.service.memory_trace``) and has it write a heap snapshot every TRACE_EVERY
seconds; roostd's log then says, at each, where its Python memory grew since the last.
Tracing slows roostd several times over: its latencies are not the daemon's.
``--memory-figures`` traces nothing (``ROOST_MEMORY_TRACE_FRAMES=0``): each minute roostd
logs only who holds its resident set (glibc's heap in use and free, the database
library's own memory), at no cost to its speed; the lines are printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Variant

from bench.ejabberd_fill import fill_ejabberd_node
from bench.figures import emit, progress, spread
from bench.loopback import ATOM, COMMENTS, LoopbackWorld, comment_entry, ejabberd_world
from bench.postgres_cluster import bench_cluster, settings_text
from bench.scale import cpu_seconds, mib, sync_all
from bench.svg_plot import line_chart
from roost.bridge.client import RoostClient, RoostDBusError
from roost.bridge.constants import PUBSUB_INTERFACE
from tests.fixtures.dbus import Roostd, wait_for_name
from tests.fixtures.world import XmppPeer, befriend

BENCH = "soak"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
FULL_DURATION = 600.0
DURATION = 60.0 if SMALL else FULL_DURATION
CLIENTS = 32
PROFILES = ("home", "work")
ACCOUNTS = {"home": "soakhome", "work": "soakwork"}
FRIENDS = 5  # contacts of each profile's account
NODES = 4 if SMALL else 10
ITEMS = 200 if SMALL else 500
AUTHORS = 200  # comment_entry's authors take turns: user0 … user199
PUBLISH_EVERY = 0.5
SAMPLE_EVERY = 5.0
TRACE_EVERY = 60.0
PAGE = 20
KEYS = 16  # keys each client rewrites in its namespace (a namespace holds 1,024 at most)
# How often each kind of call is drawn.
WEIGHTS = {"get_items": 55, "set_value": 15, "get_values": 10, "search": 15, "contact": 5}
# A signal the bench waits for (a contact's push, the last events) must come within this.
SIGNAL_WAIT = 30.0
RSS_GROWTH_PERCENT = 10.0
# p99 targets in ms, as a person at a frontend feels them with 32 clients busy at once:
# a read from the cache or a stored value within a quarter of a second (a list scrolls
# without a visible stall); a search within half a second (typing ahead); a contact
# change, which waits for the server, within a second.
P99_TARGETS_MS = {
    "get_items": 250.0,
    "get_values": 250.0,
    "set_value": 250.0,
    "search": 500.0,
    "contact_add": 1000.0,
    "contact_remove": 1000.0,
}
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "soak-rss.svg"
SHORT_PLOT = Path(__file__).resolve().parent / "results" / "soak-rss.svg"


def item_id(n: int) -> str:
    """The id of a node's ``n``-th item written before the soak."""
    return f"i{n:06d}"


def live_entry(n: int) -> str:
    """The comment published as the ``n``-th item during the soak."""
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:live-{n}</id><title>Live {n}</title>"
        f"<author><name>live</name><uri>xmpp:live@localhost</uri></author>"
        f"<content type='text'>Published during the soak, number {n}.</content>"
        "<published>2026-02-01T00:00:00Z</published></entry>"
    )


# -- what the run shares --------------------------------------------------------------------


@dataclass
class Losses:
    """What the end checks found missing."""

    writes: int = 0
    items: int = 0
    counts: int = 0
    contacts: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """What every client did, and what the listener heard."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    shapes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    # (profile, namespace, key) -> the value of the last SetValue acknowledged.
    written: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    # node -> item ids alice published and the server acknowledged, in order.
    published: dict[str, list[str]] = field(default_factory=dict)
    # (profile, node) -> item ids an ItemsEvent announced.
    announced: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    events: int = 0
    # Set at each ItemsEvent, for the wait for the last ones.
    heard: asyncio.Event = field(default_factory=asyncio.Event)
    contact_jids: set[str] = field(default_factory=set)
    losses: Losses = field(default_factory=Losses)
    # Open loop: how late (ms) each call that could not leave when due left.
    late: list[float] = field(default_factory=list)

    def timed(self, kind: str, ms: float) -> None:
        """One call of ``kind`` answered in ``ms``."""
        self.calls += 1
        self.latencies.setdefault(kind, []).append(ms)

    def failed(self, kind: str, error: str, detail: str) -> None:
        """One call of ``kind`` failed with ``error``."""
        self.calls += 1
        self.error(f"{kind}: {error}", detail)

    def error(self, name: str, detail: str) -> None:
        """Count an error (a failed call, a wrong answer, a signal missing), keeping the
        first example of each."""
        self.errors[name] += 1
        self.error_examples.setdefault(name, detail[:300])


@dataclass
class SoakWorld:
    """What the clients call on."""

    address: str
    service: str
    domain: str
    nodes: list[str]


class ContactWatch:
    """Futures resolved by ``ContactChanged`` signals, keyed by (profile, jid, removed)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, str, bool], asyncio.Future[None]] = {}

    def expect(self, profile: str, jid: str, removed: bool) -> asyncio.Future[None]:
        """A future done when the change arrives (register it before the call)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[(profile, jid, removed)] = future
        return future

    def changed(self, profile: str, contact: dict[str, Any]) -> None:
        """The ``ContactChanged`` handler."""
        future = self.waiting.pop((profile, contact["jid"], bool(contact["removed"])), None)
        if future is not None and not future.done():
            future.set_result(None)


class CheckFailed(Exception):
    """An answer was not the one expected."""


# -- one client -----------------------------------------------------------------------------


@dataclass
class Walk:
    """A page walk through one profile's node: forward ``after`` a token, backward
    ``before`` one; ``seen`` pages so far (the first page of a forward walk is known)."""

    token: str = ""
    pages: int = 0


class SoakClient:
    """One bus connection calling without pause until the deadline, each call drawn by
    WEIGHTS, each answer checked."""

    def __init__(
        self, index: int, client: RoostClient, world: SoakWorld, tally: Tally, watch: ContactWatch
    ) -> None:
        self.index = index
        self.client = client
        self.world = world
        self.tally = tally
        self.watch = watch
        self.rng = random.Random(index)
        self.forward: dict[tuple[str, str], Walk] = {}
        self.backward: dict[tuple[str, str], Walk] = {}
        self.namespace = f"soak-{index}"
        self.writes = 0
        self.contacts = 0
        self.kinds = list(WEIGHTS)
        self.weights = list(WEIGHTS.values())
        # In the open loop: when the call now being made was due (perf_counter), which its
        # first timed step counts from; None in the closed loop, or once counted.
        self.due: float | None = None

    async def run(self, deadline: float, every: float | None) -> None:
        """Call until ``deadline`` (a ``time.monotonic`` value): without pause, or with
        ``every`` seconds a call due, the first at a random phase."""
        due = time.perf_counter() + (self.rng.uniform(0, every) if every else 0.0)
        while time.monotonic() < deadline:
            if every is not None:
                ahead = due - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                else:
                    self.tally.late.append(-ahead * 1000)
                self.due, due = due, due + every
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind == "get_items":
                await self.get_items()
            elif kind == "set_value":
                await self.set_value()
            elif kind == "get_values":
                await self.get_values()
            elif kind == "search":
                await self.search()
            else:
                await self.change_contact()

    async def timed(self, kind: str, call: Callable[[], Any]) -> Any:
        """Await ``call()``, timing it as ``kind`` (from when it was due, in the open
        loop); None when it failed (counted)."""
        sent = time.perf_counter() if self.due is None else self.due
        self.due = None
        try:
            result = await call()
        except RoostDBusError as exc:
            self.tally.failed(kind, exc.name, str(exc))
            return None
        except (CheckFailed, TimeoutError) as exc:
            self.tally.failed(kind, type(exc).__name__, str(exc))
            return None
        self.tally.timed(kind, (time.perf_counter() - sent) * 1000)
        return result

    def checked(self, kind: str, ok: bool, detail: str) -> bool:
        """Count a wrong answer as an error of ``kind``."""
        if not ok:
            self.tally.error(f"{kind}: wrong answer", detail)
        return ok

    # GetItems

    async def get_items(self) -> None:
        profile = self.rng.choice(PROFILES)
        node = self.rng.choice(self.world.nodes)
        shape = self.rng.choice(("after", "before", "item_ids", "newest"))
        size = Variant("u", PAGE)
        if shape == "after":
            walk = self.forward.setdefault((profile, node), Walk())
            options = {"max_items": size, "after": Variant("s", walk.token)}
        elif shape == "before":
            walk = self.backward.setdefault((profile, node), Walk())
            options = {"max_items": size, "before": Variant("s", walk.token)}
        elif shape == "item_ids":
            chosen = sorted(self.rng.sample(range(ITEMS), PAGE))
            options = {"item_ids": Variant("as", [item_id(n) for n in chosen])}
        else:
            options = {"max_items": size}
        body = [profile, self.world.service, node, options]
        reply = await self.timed(
            "get_items",
            lambda: self.client.call(PUBSUB_INTERFACE, "GetItems", "sssa{sv}", body),
        )
        if reply is None:
            return
        self.tally.shapes[shape] += 1
        items, meta = reply
        ids = [str(i["id"].value) for i in items]
        where = f"{shape} {profile} {node[-12:]}"
        if not self.checked(
            "get_items",
            meta["from_cache"].value is True,
            f"{where}: from the server ({options}, {len(ids)} items)",
        ):
            return
        complete = bool(meta["complete"].value)
        if shape == "item_ids":
            expected = [item_id(n) for n in chosen]
            self.checked("get_items", ids == expected, f"{where}: {ids[:3]} for {expected[:3]}")
        elif shape == "after":
            if walk.pages == 0:
                expected = [item_id(n) for n in range(PAGE)]
                self.checked("get_items", ids == expected, f"{where}: first page {ids[:3]}")
            else:
                self.checked("get_items", len(ids) == PAGE or complete, f"{where}: {len(ids)}")
            walk.token, walk.pages = str(meta["rsm_last"].value) if ids else "", walk.pages + 1
            if complete:
                self.forward.pop((profile, node))
        elif shape == "before":
            self.checked("get_items", len(ids) == PAGE or complete, f"{where}: {len(ids)}")
            walk.token, walk.pages = str(meta["rsm_first"].value) if ids else "", walk.pages + 1
            if complete:
                self.backward.pop((profile, node))
        else:
            self.checked("get_items", len(ids) == PAGE, f"{where}: {len(ids)} items")

    # settings

    async def set_value(self) -> None:
        self.writes += 1
        profile = PROFILES[self.writes % len(PROFILES)]
        key = f"k{self.rng.randrange(KEYS)}"
        value = [self.writes, f"write {self.writes} of client {self.index}"]
        body = [profile, self.namespace, key, Variant("(ts)", value)]
        done = await self.timed(
            "set_value",
            lambda: self.client.call("org.roost.Backend1.Storage", "SetValue", "sssv", body),
        )
        if done is not None:
            self.tally.written[(profile, self.namespace, key)] = value

    async def get_values(self) -> None:
        profile = self.rng.choice(PROFILES)
        found = await self.timed(
            "get_values", lambda: self.client.get_values(profile, self.namespace)
        )
        if found is None:
            return
        for key in (f"k{n}" for n in range(KEYS)):
            acked = self.tally.written.get((profile, self.namespace, key))
            got = list(found[key].value) if key in found else None
            if got != acked:
                detail = f"{profile}/{self.namespace}/{key}: read {got}, last written {acked}"
                self.checked("get_values", False, detail)
                return

    # search

    async def search(self) -> None:
        profile = self.rng.choice(PROFILES)
        nodes = self.rng.sample(self.world.nodes, min(3, len(self.world.nodes)))
        common: dict[str, Any] = {"profiles": [profile], "nodes": nodes, "limit": PAGE}
        if self.rng.random() < 0.5:
            n = self.rng.randrange(ITEMS)
            query = {**common, "fts": f"comment {n}"}
            label = f"fts comment {n}"
        else:
            author = f"user{self.rng.randrange(min(AUTHORS, ITEMS))}@localhost"
            query = {
                **common,
                "parsed": [{"path": "author_jid", "op": "eq", "value": author}],
            }
            label = f"author {author}"
        hits = await self.timed("search", lambda: self.client.search(**query))
        if hits is None:
            return
        good = bool(hits) and all(h["profile"] == profile and h["node"] in nodes for h in hits)
        self.checked("search", good, f"{label}: {len(hits)} hits")

    # contacts

    async def change_contact(self) -> None:
        self.contacts += 1
        profile = PROFILES[self.contacts % len(PROFILES)]
        jid = f"soak-{self.index}-{self.contacts}@{self.world.domain}"
        self.tally.contact_jids.add(jid)
        for removed, kind in ((False, "contact_add"), (True, "contact_remove")):
            arrived = self.watch.expect(profile, jid, removed)

            async def call(removed: bool = removed) -> bool:
                if removed:
                    await self.client.remove_contact(profile, jid)
                else:
                    await self.client.add_contact(profile, jid, name="Soak", subscribe=False)
                return True

            if await self.timed(kind, call) is None:
                self.watch.waiting.pop((profile, jid, removed), None)
                return
            try:
                await asyncio.wait_for(arrived, SIGNAL_WAIT)
            except TimeoutError:
                self.tally.error(f"{kind}: no ContactChanged", f"{profile} {jid}")
                return


# -- the load, the events, the samples ------------------------------------------------------


async def publish_loop(
    world: LoopbackWorld, soak: SoakWorld, tally: Tally, deadline: float
) -> None:
    """alice publishes a new item every PUBLISH_EVERY seconds, to the nodes in turn."""
    n = 0
    async with XmppPeer(world.server, "alice") as alice:
        next_at = time.monotonic()
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += PUBLISH_EVERY
            node = soak.nodes[n % len(soak.nodes)]
            live = f"live{n:05d}"
            try:
                await alice.publish(node, live, live_entry(n), service=soak.service)
            except (AssertionError, TimeoutError) as exc:
                tally.error("publish (alice): failed", str(exc))
            else:
                tally.published.setdefault(node, []).append(live)
            n += 1


@dataclass
class Sample:
    """One look at the run."""

    seconds: float
    rss_mib: float
    calls: int
    events: int
    errors: int
    # The machine's load average over the last minute (other work shares the cores).
    load: float


async def sample_loop(pid: int, tally: Tally, began: float, deadline: float) -> list[Sample]:
    """Every SAMPLE_EVERY seconds until ``deadline``: RSS and the counts so far."""
    samples: list[Sample] = []
    next_at = began
    while True:
        errors = sum(tally.errors.values())
        rss = mib(pid, "VmRSS")
        load = os.getloadavg()[0]
        elapsed = time.monotonic() - began
        samples.append(Sample(elapsed, rss, tally.calls, tally.events, errors, load))
        if len(samples) % 12 == 1:
            progress(
                BENCH,
                f"{samples[-1].seconds:4.0f} s: RSS {rss:.1f} MiB, {tally.calls} calls,"
                f" {tally.events} events, {errors} errors, load {load:.1f}",
            )
        next_at += SAMPLE_EVERY
        if next_at > deadline + 0.5:
            return samples
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def trace_loop(pid: int, began: float, deadline: float) -> None:
    """Ask roostd for a heap snapshot at the start and every TRACE_EVERY seconds."""
    next_at = began
    while next_at <= deadline:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        os.kill(pid, signal.SIGUSR1)
        next_at += TRACE_EVERY


async def soak(
    world: LoopbackWorld,
    soak_world: SoakWorld,
    pid: int,
    duration: float,
    rate: float | None,
    *,
    snapshots: bool = False,
) -> Any:
    """The soak itself, closed loop or at ``rate`` calls/s; returns (tally, samples,
    seconds, roostd CPU seconds)."""
    tally, watch = Tally(), ContactWatch()
    listener = await RoostClient.connect(soak_world.address)

    def announced(profile: str, _service: str, node: str, kind: str, items: Any) -> None:
        tally.events += 1
        if kind == "items":
            seen = tally.announced.setdefault((profile, node), set())
            seen.update(str(item["id"]) for item in items)
        tally.heard.set()

    await listener.on_items_event(announced)
    await listener.on_contact_changed(watch.changed)
    clients = [await RoostClient.connect(soak_world.address) for _ in range(CLIENTS)]
    workers = [SoakClient(n, c, soak_world, tally, watch) for n, c in enumerate(clients)]
    cpu_before = cpu_seconds(pid)
    began = time.monotonic()
    deadline = began + duration
    sampler = asyncio.ensure_future(sample_loop(pid, tally, began, deadline))
    publisher = asyncio.ensure_future(publish_loop(world, soak_world, tally, deadline))
    tracer = asyncio.ensure_future(trace_loop(pid, began, deadline)) if snapshots else None
    every = CLIENTS / rate if rate else None
    await asyncio.gather(*(w.run(deadline, every) for w in workers))
    seconds = time.monotonic() - began
    roostd_cpu = cpu_seconds(pid) - cpu_before
    samples = await sampler
    await publisher
    if tracer is not None:
        await tracer
    for client in clients:
        client.close()
    await wait_for_events(tally)
    await check_data(listener, soak_world, tally)
    listener.close()
    return tally, samples, seconds, roostd_cpu


async def wait_for_events(tally: Tally) -> None:
    """Until every published item was announced to every profile, SIGNAL_WAIT at most."""
    limit = time.monotonic() + SIGNAL_WAIT
    while missing_events(tally) and time.monotonic() < limit:
        tally.heard.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.heard.wait(), limit - time.monotonic())


def missing_events(tally: Tally) -> int:
    """Published items some profile was not told of."""
    return sum(
        len(set(ids) - tally.announced.get((profile, node), set()))
        for node, ids in tally.published.items()
        for profile in PROFILES
    )


async def check_data(client: RoostClient, world: SoakWorld, tally: Tally) -> None:
    """Every acknowledged write read back, every item in each profile's cache, each node's
    count, the contacts as they were; what is missing goes to ``tally.losses``."""
    losses = tally.losses
    for profile in PROFILES:
        for n in range(CLIENTS):
            namespace = f"soak-{n}"
            stored = await client.get_values(profile, namespace)
            for (p, ns, key), value in tally.written.items():
                if p == profile and ns == namespace:
                    got = list(stored[key].value) if key in stored else None
                    if got != value:
                        losses.writes += 1
                        losses.notes.append(f"{p}/{ns}/{key}: {got} instead of {value}")
        for node in world.nodes:
            ids = tally.published.get(node, [])
            if ids:
                hits = await client.search(
                    profiles=[profile], nodes=[node], item_ids=ids, limit=1000
                )
                found = {h["id"] for h in hits}
                missing = [i for i in ids if i not in found]
                losses.items += len(missing)
                if missing:
                    losses.notes.append(f"{profile} {node[-12:]}: {missing[:5]} not cached")
            state = await client.get_node_state(profile, world.service, node)
            if state["item_count"] != ITEMS + len(ids) or state["state"] != "completed":
                losses.counts += 1
                losses.notes.append(f"{profile} {node[-12:]}: {state}")
        contacts = {c["jid"] for c in await client.list_contacts(profile)}
        friends = {friend_jid(world.domain, profile, k) for k in range(FRIENDS)}
        left = contacts & tally.contact_jids
        losses.contacts += len(friends - contacts) + len(left)
        if contacts != friends:
            losses.notes.append(f"{profile} contacts: {sorted(contacts ^ friends)[:5]}")


def friend_jid(domain: str, profile: str, k: int) -> str:
    """The JID of a profile's ``k``-th friend."""
    return f"{friend_name(profile, k)}@{domain}"


def friend_name(profile: str, k: int) -> str:
    """The account name of a profile's ``k``-th friend."""
    return f"friend{k}{profile}"


# -- the world ------------------------------------------------------------------------------


async def make_world(world: LoopbackWorld) -> list[str]:
    """Accounts, friends and filled nodes, all by independent clients; returns the nodes."""
    server = world.server
    friends = [friend_name(p, k) for p in PROFILES for k in range(FRIENDS)]
    await server.register_many([*ACCOUNTS.values(), *friends])
    for profile, account in ACCOUNTS.items():
        for k in range(FRIENDS):
            await befriend(server, account, friend_name(profile, k))
    nodes = [f"{COMMENTS}soak-{k}-{uuid.uuid4().hex[:8]}" for k in range(NODES)]
    async with XmppPeer(server, "alice") as alice:
        for node in nodes:
            await alice.create_node(
                node, {"pubsub#max_items": "max"}, service=server.pubsub_service
            )
    for node in nodes:
        payloads = ((item_id(n), comment_entry(n)) for n in range(ITEMS))
        count = await fill_ejabberd_node(server, node, server.jid("alice"), payloads)
        assert count == ITEMS, count
    return nodes


async def connect_and_sync(world: LoopbackWorld, nodes: list[str]) -> None:
    """The profiles created and connected, every node synchronised for each."""
    client = await RoostClient.connect(world.bus.address)
    for profile, account in ACCOUNTS.items():
        jid, password, options = world.server.credentials(account)
        await client.create_profile(profile, jid, password, options)
    for profile in PROFILES:
        await client.connect_profile(profile)
    for node in nodes:
        await sync_all(client, list(PROFILES), world.server.pubsub_service, node)
    for profile in PROFILES:
        contacts = await client.list_contacts(profile)
        assert len(contacts) == FRIENDS, (profile, contacts)
    client.close()


@contextlib.contextmanager
def database_url(kind: str) -> Iterator[tuple[str | None, int | None]]:
    """(URL, PostgreSQL postmaster's pid) of the database to soak on; (None, None) for
    SQLite (the launcher's file)."""
    if kind == "sqlite":
        yield None, None
        return
    with bench_cluster() as cluster, cluster.database() as url:
        progress(BENCH, f"PostgreSQL cluster up ({settings_text()})")
        yield url, int((cluster.data_dir / "postmaster.pid").read_text().split()[0])


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RssWindows:
    """Mean RSS (MiB) over the windows the growth figure compares.

    The daemon's bounded memories (the answers memo, ``GetValues``' copies, the parsers'
    and the connections' buffers) fill during the first window: ``warm_up`` is its
    mean, and the growth is measured from the window after it (``first``) to the last.
    """

    warm_up: float
    first: float
    last: float
    window: float


def rss_windows(samples: list[Sample], seconds: float) -> RssWindows:
    """The windows of a run: a minute each, or a quarter of a run shorter than four
    minutes."""
    window = min(60.0, seconds / 4)
    end = samples[-1].seconds

    def mean(start: float, stop: float) -> float:
        values = [s.rss_mib for s in samples if start <= s.seconds <= stop]
        return sum(values) / len(values)

    return RssWindows(
        warm_up=mean(0, window),
        first=mean(window, 2 * window),
        last=mean(end - window, end),
        window=window,
    )


def slope_per_minute(samples: list[Sample], after: float) -> float:
    """Least-squares slope of RSS (MiB a minute) over the samples after ``after`` s."""
    points = [(s.seconds / 60, s.rss_mib) for s in samples if s.seconds >= after]
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def report(
    database: str,
    rate: float | None,
    tally: Tally,
    samples: list[Sample],
    seconds: float,
    cpu: float,
) -> None:
    """Emit the figures."""
    name = f"_{database}" if rate is None else f"_{database}_at_{rate:g}_per_s"
    total = sum(len(v) for v in tally.latencies.values())
    emit(
        BENCH,
        f"duration{name}",
        seconds,
        "s",
        clients=CLIENTS,
        nodes=NODES,
        items=ITEMS,
        loop="closed" if rate is None else f"open, {rate:g} calls/s offered",
    )
    if rate is not None:
        # Calls that left late are the backlog of an answer slower than the spacing.
        late = spread(tally.late) if tally.late else {"median": 0.0, "max": 0.0}
        emit(
            BENCH,
            f"calls_late{name}",
            len(tally.late),
            "calls",
            late_median_ms=round(late["median"], 1),
            late_max_ms=round(late["max"], 1),
        )
    emit(
        BENCH,
        f"throughput{name}",
        total / seconds,
        "calls/s",
        calls=total,
        roostd_cpu_ms_per_call=round(cpu * 1000 / max(1, total), 3),
        **{kind: len(v) for kind, v in tally.latencies.items()},
        **dict(tally.shapes),
    )
    for kind, samples_ms in sorted(tally.latencies.items()):
        found = spread(samples_ms)
        emit(BENCH, f"{kind}_p50{name}", found["median"], "ms", samples=len(samples_ms))
        upper = "p99" if "p99" in found else "max"
        emit(
            BENCH,
            f"{kind}_{upper}{name}",
            found[upper],
            "ms",
            at_most=P99_TARGETS_MS.get(kind),
            samples=len(samples_ms),
            max=round(found["max"], 1),
        )
    errors = sum(tally.errors.values())
    emit(
        BENCH,
        f"errors{name}",
        errors,
        "errors",
        at_most=0,
        by_kind=dict(tally.errors) or None,
        examples=tally.error_examples or None,
    )
    windows = rss_windows(samples, seconds)
    emit(
        BENCH,
        f"rss_growth{name}",
        (windows.last - windows.first) / windows.first * 100,
        "%",
        at_most=RSS_GROWTH_PERCENT,
        first_window_mib=round(windows.first, 1),
        last_window_mib=round(windows.last, 1),
        window_s=windows.window,
        slope_mib_per_min=round(slope_per_minute(samples, windows.window), 3),
        slope_last_half_mib_per_min=round(slope_per_minute(samples, seconds / 2), 3),
        peak_mib=round(max(s.rss_mib for s in samples), 1),
    )
    # The warm-up included, as this figure was judged before 2026-12-07.
    emit(
        BENCH,
        f"rss_growth_from_start{name}",
        (windows.last - windows.warm_up) / windows.warm_up * 100,
        "%",
        warm_up_window_mib=round(windows.warm_up, 1),
    )
    published = sum(len(ids) for ids in tally.published.values())
    emit(
        BENCH,
        f"items_events{name}",
        tally.events,
        "signals",
        published=published,
        profiles=len(PROFILES),
    )
    emit(BENCH, f"events_missing{name}", missing_events(tally), "items", at_most=0)
    losses = tally.losses
    emit(
        BENCH,
        f"data_lost{name}",
        losses.writes + losses.items + losses.counts + losses.contacts,
        "records",
        at_most=0,
        writes_checked=len(tally.written),
        items_checked=published * len(PROFILES),
        writes_lost=losses.writes,
        items_missing=losses.items,
        node_counts_wrong=losses.counts,
        contacts_wrong=losses.contacts,
        notes=losses.notes[:10] or None,
    )
    emit(
        BENCH,
        f"rss_samples{name}",
        len(samples),
        "samples",
        every_s=SAMPLE_EVERY,
        columns=["seconds", "rss_mib", "calls", "events", "load"],
        samples=[
            [round(s.seconds), round(s.rss_mib, 1), s.calls, s.events, s.load] for s in samples
        ],
        mean_load=round(sum(s.load for s in samples) / len(samples), 2),
    )


def plot(
    path: Path, database: str, rate: float | None, samples: list[Sample], seconds: float
) -> None:
    """The RSS curve, with the 10 % band above the mean of the window after the
    warm-up."""
    windows = rss_windows(samples, seconds)
    load = "" if rate is None else f", {rate:g} calls/s"
    line_chart(
        path,
        [(s.seconds / 60, s.rss_mib) for s in samples],
        title=f"roostd resident memory during a {seconds / 60:.0f}-minute soak ({database}{load})",
        x_label="minutes into the soak",
        y_label="RSS (MiB)",
        band=(windows.first, windows.first * (1 + RSS_GROWTH_PERCENT / 100)),
        band_label=(
            f"mean of the {windows.window:.0f} s after the first + {RSS_GROWTH_PERCENT:.0f} %"
        ),
    )


# -- the run --------------------------------------------------------------------------------


def run(
    database: str,
    duration: float,
    rate: float | None,
    plot_path: Path,
    memory_trace: Path | None = None,
    memory_figures: bool = False,
) -> None:
    """Set up the world, soak, check, report."""
    began = time.perf_counter()
    with (
        ejabberd_world("roost-bench-soak-", ITEMS * 10) as world,
        database_url(database) as (url, _postmaster),
    ):
        nodes = asyncio.run(make_world(world))
        progress(BENCH, f"{len(nodes)} nodes of {ITEMS} items and the friends ready")
        extra = ("--database", url) if url is not None else ()
        env = None
        if memory_trace is not None:
            env = {"ROOST_MEMORY_TRACE": str(memory_trace)}
        elif memory_figures:
            # Nothing is written there without frames.
            env = {"ROOST_MEMORY_TRACE": str(world.config.parent), "ROOST_MEMORY_TRACE_FRAMES": "0"}
        daemon: Roostd = world.launcher.spawn(
            "--log-level", "info", "--config", str(world.config), *extra, env=env
        )
        wait_for_name(world.bus.address, timeout=120)
        if daemon.process.poll() is not None:
            raise RuntimeError(f"roostd exited at start:\n{daemon.log_text()}")
        soak_world = SoakWorld(
            world.bus.address, world.server.pubsub_service, world.server.domain, nodes
        )
        try:
            asyncio.run(connect_and_sync(world, nodes))
            load = "without pause" if rate is None else f"at {rate:g} calls/s in all"
            progress(BENCH, f"{database}: {CLIENTS} clients {load} for {duration:.0f} s")
            tally, samples, seconds, cpu = asyncio.run(
                soak(
                    world,
                    soak_world,
                    daemon.process.pid,
                    duration,
                    rate,
                    snapshots=memory_trace is not None or memory_figures,
                )
            )
        except BaseException:
            progress(BENCH, f"roostd's log ends with:\n{daemon.log_text()[-5000:]}")
            raise
        alive = daemon.process.poll() is None
        if memory_trace is not None or memory_figures:
            words = ("memory grew", "memory snapshot", "memory figures")
            lines = [
                line for line in daemon.log_text().splitlines() if any(w in line for w in words)
            ]
            progress(BENCH, "roostd's memory, minute by minute:")
            for line in lines:
                progress(BENCH, line.split(": ", 1)[-1] if "memory grew" in line else line)
        if daemon.terminate(120) != 0:
            raise RuntimeError(f"roostd exited with {daemon.process.returncode}")
    report(database, rate, tally, samples, seconds, cpu)
    emit(BENCH, f"roostd_alive_at_end_{database}", float(alive), "bool", at_least=1)
    plot(plot_path, database, rate, samples, seconds)
    progress(BENCH, f"RSS curve in {plot_path}; done in {time.perf_counter() - began:.0f} s")


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds of soak")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--rate",
        type=float,
        help="calls/s offered by the clients together (open loop); without it, closed loop",
    )
    parser.add_argument("--plot", type=Path, help="the SVG file of the RSS curve")
    parser.add_argument(
        "--memory-trace",
        type=Path,
        metavar="DIR",
        help="trace roostd's Python heap, a snapshot into DIR every minute (slow)",
    )
    parser.add_argument(
        "--memory-figures",
        action="store_true",
        help="have roostd log who holds its memory every minute (no trace, no slowdown)",
    )
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    full_plot = DEFAULT_PLOT
    if args.database != "sqlite":
        full_plot = DEFAULT_PLOT.with_name(f"{DEFAULT_PLOT.stem}-{args.database}.svg")
    if args.rate is not None:
        full_plot = full_plot.with_name(f"{full_plot.stem}-open.svg")
    plot_path = args.plot or (full_plot if args.duration >= FULL_DURATION else SHORT_PLOT)
    memory_trace = args.memory_trace.resolve() if args.memory_trace else None
    run(args.database, args.duration, args.rate, plot_path, memory_trace, args.memory_figures)


if __name__ == "__main__":
    main()
