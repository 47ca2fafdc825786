"""Start-up benchmark: from launching ``roostd`` to its bus name being owned; idle RSS.

Prints one JSON object a line through ``bench/figures.py``; progress goes to stderr.

On a private dbus-daemon, a client watches ``NameOwnerChanged`` and launches ``roostd``
several times each with:

1. an empty database (a new file each time: created and migrated at start);
2. a database holding a million cached items (``ROOST_BENCH_SMALL=1``: 100k) as a
   person with a large cache would have it: 10 profiles with a roster of 200 contacts
   each, 100 microblog nodes a profile (analysed, synchronised, completed), and the items
   of the storage benchmark's generator (``bench/storage.py``: about 2.3 KB of Atom XML,
   0.6 KB of parsed JSON and 1.6 KB of indexed text each), with the full-text index and
   the microblog analyser's parsed-key indexes. A first start creates the file; the
   profiles, rosters and nodes are written through the stores, the items bulk-loaded
   with plain sqlite3 (the full-text triggers dropped meanwhile, then the index rebuilt,
   which is how ``bench/storage.py`` builds its 1M database too). The count is checked
   before anything is reported.

The median of the starts is reported against the 1 s target, with the daemon's
main-thread CPU time until then (steadier than the wall-clock time on a loaded
machine). The daemon runs from compiled byte code, as an installed package does: it is
cached under the bench's temporary directory (``PYTHONPYCACHEPREFIX``) by a first,
uncounted start, whatever ``PYTHONDONTWRITEBYTECODE`` says.

Then a daemon started on the large database is asked a full-text ``Search`` as soon as
it owns its name, twice: after a daemon was killed on it
(``first_fulltext_search_…_after_a_kill``: the search waits for the full-text check the
daemon then runs after start), and after a clean stop (``first_fulltext_search_…``: the
index is trusted); the idle RSS of the second is read from ``/proc`` once it has gone
idle, against the 80 MiB target.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from bench.figures import emit, progress
from bench.storage import Corpus
from roost.bridge.client import RoostClient
from roost.service.cache.analysers import MICROBLOG_NODE, AnalyserRegistry
from roost.storage import Database
from roost.storage.fulltext import FTS_TABLE, SQLITE_FTS_DDL, SQLITE_FTS_DROP
from roost.storage.records import RosterEntry
from tests.fixtures.dbus import roostd_command, roostd_env, start_bus, stop_bus

BENCH = "startup"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
ITEMS = 100_000 if SMALL else 1_000_000
PROFILES = 10
NODES_PER_PROFILE = 100
CONTACTS_PER_PROFILE = 200
RUNS = 7
NAME = "org.roost.Backend1"
TARGET_SECONDS = 1.0
TARGET_RSS_MIB = 80.0
# Idle: the daemon used less than this share of a CPU over one second.
IDLE_CPU_SHARE = 0.02
IDLE_WAIT_SECONDS = 120.0

ITEM_SQL = (
    "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, parsed, "
    "search_text, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class Launcher:
    """Launches roostd and times it until the bus announces its name's owner."""

    def __init__(self, bus: MessageBus, address: str, home: Path) -> None:
        self.bus = bus
        self.address = address
        self.home = home
        self.env = roostd_env(home, address)
        # Byte code as an installed package has it, kept out of the source tree.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
        self.cpu: asyncio.Queue[float] = asyncio.Queue()
        self.process: asyncio.subprocess.Process | None = None
        self.owned: asyncio.Queue[float] = asyncio.Queue()
        self.launched = 0
        bus.add_message_handler(self._on_message)

    async def watch(self) -> None:
        """Subscribe to NameOwnerChanged for Roost's name."""
        rule = f"type='signal',member='NameOwnerChanged',arg0='{NAME}'"
        reply = await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN

    def _on_message(self, msg: Message) -> None:
        if msg.member == "NameOwnerChanged" and msg.body[0] == NAME and msg.body[2]:
            self.owned.put_nowait(time.perf_counter())
            if self.process is not None and self.process.pid is not None:
                self.cpu.put_nowait(main_thread_cpu(self.process.pid))

    async def launch(self, database: Path) -> tuple[float, asyncio.subprocess.Process]:
        """Seconds from launch to name owned, and the running process (the main thread's
        CPU seconds until then wait in :attr:`cpu`)."""
        self.launched += 1
        log = self.home / f"roostd-{self.launched}.log"
        with log.open("wb") as err:
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *roostd_command(),
                "--bus-address",
                self.address,
                "--database",
                f"sqlite:///{database}",
                "--log-level",
                "warning",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        self.process = process
        try:
            owned = await asyncio.wait_for(self.owned.get(), 120)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"roostd did not take its name:\n{log.read_text()}") from None
        return owned - started, process

    async def stop(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM and wait."""
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)


# -- the large database -------------------------------------------------------------------


async def write_nodes(database: Path) -> list[int]:
    """Profiles, rosters and analysed, synchronised microblog nodes, through the stores.

    Returns:
        The node ids, in the order the items are spread over them.
    """
    db = await Database.open(f"sqlite+aiosqlite:///{database}", check_fulltext=False)
    registry = AnalyserRegistry()
    registry.load_entry_points()
    analyser = registry.get("microblog")
    assert analyser is not None and analyser.type is not None
    fingerprint = registry.fingerprint()
    per_node = ITEMS // (PROFILES * NODES_PER_PROFILE)
    node_ids = []
    for p in range(PROFILES):
        name = f"p{p}"
        await db.profiles.create_profile(name, f"{name}@example.org", "secret", {})
        contacts = [
            RosterEntry(f"c{c}@example.org", f"Contact {c}", ("Friends",), "both")
            for c in range(CONTACTS_PER_PROFILE)
        ]
        await db.roster.replace_roster(name, "1", contacts)
        for n in range(NODES_PER_PROFILE):
            node = await db.nodes.get_or_create_node(name, contacts[n].jid, MICROBLOG_NODE)
            await db.nodes.set_analysis(node.id, analyser.name, analyser.type, analyser.subtype)
            await db.nodes.set_subscribed(node.id, True)
            extra = {
                "analysed": True,
                "to_sync": True,
                "analysed_with": fingerprint,
                "parsed_with": analyser.parser_identity,
                "seen_namespaces": ["http://www.w3.org/2005/Atom"],
                "kept_by": "presence",
                "synced_once": True,
                "synced_at": time.time(),
                "attempts": 0,
                "truncated": False,
                "total": per_node,
            }
            await db.nodes.set_sync_state(node.id, "completed", extra=extra)
            node_ids.append(node.id)
    await db.close()
    return node_ids


def item_rows(node_ids: list[int]) -> Iterator[tuple[Any, ...]]:
    """The storage benchmark's items, each node's share in a run as a sync writes it."""
    corpus = Corpus(seed=13)
    per_node = ITEMS // len(node_ids)
    for n in range(ITEMS):
        item_id, publisher, xml, parsed, search_text, created = corpus.item(n)
        yield (
            node_ids[n // per_node],
            item_id,
            publisher,
            n % per_node + 1,
            xml,
            json_text(parsed),
            search_text,
            created,
            created,
        )


def json_text(parsed: dict[str, Any]) -> str:
    """Parsed data as the item store serialises it."""
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))


def load_items(database: Path, node_ids: list[int]) -> None:
    """Bulk-load the items without the full-text triggers, then put the index back."""
    began = time.perf_counter()
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for ddl in SQLITE_FTS_DROP:
        conn.execute(ddl)
    conn.execute("BEGIN")
    conn.executemany(ITEM_SQL, item_rows(node_ids))
    conn.execute("COMMIT")
    progress(BENCH, f"{ITEMS} items loaded in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    for ddl in SQLITE_FTS_DDL:
        conn.execute(ddl)
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    progress(BENCH, f"full-text index rebuilt in {time.perf_counter() - began:.0f} s")


async def index_and_count(database: Path) -> tuple[int, int]:
    """The microblog analyser's parsed-key indexes, as after real syncs; then the counts
    of items and of full-text rows."""
    db = await Database.open(f"sqlite+aiosqlite:///{database}", check_fulltext=False)
    registry = AnalyserRegistry()
    analyser = registry.get("microblog")
    assert analyser is not None
    for key in analyser.indexed_keys:
        await db.items.ensure_parsed_key_index(key)
    await db.close()
    with sqlite3.connect(database) as conn:
        items = conn.execute("SELECT count(*) FROM pubsub_items").fetchone()[0]
        indexed = conn.execute(f"SELECT count(*) FROM {FTS_TABLE}_docsize").fetchone()[0]
    return int(items), int(indexed)


# -- the process ---------------------------------------------------------------------------


def status_mib(pid: int, field: str) -> float:
    """A memory figure of a process (``VmRSS``, ``VmHWM``), from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def cpu_seconds(pid: int, stat: str = "stat") -> float:
    """User and system CPU time of a process (all threads; ``task/<pid>/stat``: the main
    thread's)."""
    fields = Path(f"/proc/{pid}/{stat}").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (0 when it is gone)."""
    try:
        return cpu_seconds(pid, f"task/{pid}/stat")
    except OSError:
        return 0.0


async def wait_idle(pid: int) -> float:
    """Wait until the process uses less than IDLE_CPU_SHARE of a CPU over a second;
    returns the seconds waited."""
    began = time.perf_counter()
    while time.perf_counter() - began < IDLE_WAIT_SECONDS:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < IDLE_CPU_SHARE:
            return time.perf_counter() - began
    raise RuntimeError(f"roostd still busy after {IDLE_WAIT_SECONDS:.0f} s")


async def starts(launcher: Launcher, databases: list[Path]) -> tuple[list[float], list[float]]:
    """Seconds to the name of a start on each database in turn, and the main thread's
    CPU seconds until then."""
    times, cpu = [], []
    for database in databases:
        elapsed, process = await launcher.launch(database)
        times.append(elapsed)
        cpu.append(await launcher.cpu.get())
        await launcher.stop(process)
    return times, cpu


def report(metric: str, times: list[float], cpu: list[float], **extra: Any) -> None:
    """The median of the starts against the target, with every sample."""
    emit(
        BENCH,
        metric,
        statistics.median(times),
        "s",
        at_most=TARGET_SECONDS,
        runs=len(times),
        max=round(max(times), 3),
        samples=[round(t, 3) for t in times],
        main_thread_cpu_s=round(statistics.median(cpu), 3),
        **extra,
    )


async def first_fulltext_search(bus: MessageBus) -> tuple[float, int]:
    """Seconds a full-text search takes when asked as the name is owned, and its hits."""
    started = time.perf_counter()
    hits = await RoostClient(bus).search(fts="zanzibar", limit=20)
    return time.perf_counter() - started, len(hits)


async def run(directory: Path, address: str) -> None:
    """Both scenarios, then the idle RSS."""
    bus = await MessageBus(bus_address=address).connect()
    home = directory / "home"
    home.mkdir()
    launcher = Launcher(bus, address, home)
    await launcher.watch()

    progress(BENCH, "a first start, compiling the byte code")
    await starts(launcher, [directory / "warm-up.sqlite"])
    progress(BENCH, "empty database")
    times, cpu = await starts(launcher, [directory / f"empty{n}.sqlite" for n in range(RUNS)])
    report("start_to_name_owned_empty_db", times, cpu)

    label = f"{ITEMS // 1_000_000}M" if ITEMS >= 1_000_000 else f"{ITEMS // 1000}k"
    progress(BENCH, f"building a database of {ITEMS} items")
    full = directory / "full.sqlite"
    _, process = await launcher.launch(full)  # created and migrated by a first start
    await launcher.stop(process)
    node_ids = await write_nodes(full)
    await asyncio.to_thread(load_items, full, node_ids)
    items, indexed = await index_and_count(full)
    if items != ITEMS or indexed != ITEMS:
        raise RuntimeError(f"the database holds {items} items, {indexed} indexed: not {ITEMS}")
    size = full.stat().st_size / 2**30
    progress(BENCH, f"{items} items in {len(node_ids)} nodes, {size:.1f} GiB")

    progress(BENCH, f"database with {label} items")
    times, cpu = await starts(launcher, [full] * RUNS)
    report(
        f"start_to_name_owned_{label}_items",
        times,
        cpu,
        items=items,
        nodes=len(node_ids),
        file_gib=round(size, 2),
    )

    # After a kill the start checks the full-text index (it reads every item), and a
    # full-text search waits for it; after a clean stop it trusts the index.
    progress(BENCH, "a full-text search at once after a kill")
    _, process = await launcher.launch(full)
    process.kill()
    await process.wait()
    _, process = await launcher.launch(full)
    seconds, hits = await first_fulltext_search(bus)
    if not hits:
        raise RuntimeError("the full-text search found nothing")
    emit(BENCH, f"first_fulltext_search_{label}_items_after_a_kill", seconds, "s", hits=hits)
    await launcher.stop(process)

    progress(BENCH, "a full-text search at once after a clean stop, then the idle RSS")
    _, process = await launcher.launch(full)
    assert process.pid is not None
    seconds, hits = await first_fulltext_search(bus)
    if not hits:
        raise RuntimeError("the full-text search found nothing")
    emit(BENCH, f"first_fulltext_search_{label}_items", seconds, "s", hits=hits)
    waited = await wait_idle(process.pid)
    rss, peak = status_mib(process.pid, "VmRSS"), status_mib(process.pid, "VmHWM")
    await launcher.stop(process)
    emit(
        BENCH,
        f"idle_rss_{label}_items",
        rss,
        "MiB",
        at_most=TARGET_RSS_MIB,
        peak_mib=round(peak, 1),
        idle_after_s=round(waited, 1),
    )
    bus.disconnect()


def main() -> None:
    """Run the benchmark on a private bus in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="roost-bench-startup-") as tmp:
        directory = Path(tmp)
        bus = start_bus(directory / "bus")
        try:
            asyncio.run(run(directory, bus.address))
        finally:
            stop_bus(bus)


if __name__ == "__main__":
    main()
