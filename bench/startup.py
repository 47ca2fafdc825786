"""Start-up benchmark: from launching ``roostd`` to its bus name being owned; idle RSS.

Prints one JSON object a line (bench, metric, value, unit, and where it compares:
baseline, ratio); progress goes to stderr.

On a private dbus-daemon, a client watches ``NameOwnerChanged`` and launches ``roostd``
five times each with:

1. an empty database (a new file each time: created and migrated at start);
2. a database holding 100k cached items (a first start migrates the file, then the items
   are inserted with plain sqlite3, the full-text index filled by its triggers).

The median of 5 is reported against the 1 s target (``baseline``). Idle RSS is read from
``/proc`` a few seconds after the last start, against the 80 MiB target. Set
``ROOST_BENCH_SMALL=1`` for 10k items.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from tests.fixtures.dbus import start_bus, stop_bus

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
ITEMS = 10_000 if SMALL else 100_000
RUNS = 5
NAME = "org.roost.Backend1"
TARGET_SECONDS = 1.0
TARGET_RSS_MIB = 80.0


def emit(metric: str, value: float, unit: str, **compare: float) -> None:
    """Print one result line."""
    line = {"bench": "startup", "metric": metric, "value": round(value, 3), "unit": unit}
    line.update({k: round(v, 3) for k, v in compare.items()})
    print(json.dumps(line), flush=True)


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[startup] {message}", file=sys.stderr, flush=True)


class Launcher:
    """Launches roostd and times it until the bus announces its name's owner."""

    def __init__(self, bus: MessageBus, address: str, home: Path) -> None:
        self.bus = bus
        self.address = address
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
        }
        self.owned: asyncio.Queue[float] = asyncio.Queue()
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

    async def launch(self, database: Path) -> tuple[float, asyncio.subprocess.Process]:
        """Seconds from launch to name owned, and the running process."""
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("roostd")),
            "--bus-address",
            self.address,
            "--database",
            f"sqlite:///{database}",
            "--log-level",
            "warning",
            env=self.env,
        )
        owned = await asyncio.wait_for(self.owned.get(), 60)
        return owned - started, process

    async def stop(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM and wait."""
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


def fill(database: Path, count: int) -> None:
    """Insert ``count`` cached items (Atom-like XML) with plain sqlite3."""
    now = time.time()
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO profiles (name, jid, password, options, created) "
            "VALUES ('bench', 'bench@example.org', 'pw', '{}', ?)",
            (now,),
        )
        profile_id = db.execute("SELECT id FROM profiles WHERE name = 'bench'").fetchone()[0]
        node_ids = []
        for index in range(10):
            cursor = db.execute(
                "INSERT INTO pubsub_nodes (profile_id, service, name, analyser, type, subtype, "
                "sync_state, sync_state_updated, subscribed, extra) VALUES "
                "(?, 'pubsub.example.org', ?, 'microblog', 'blog', '', 'completed', ?, 1, '{}')",
                (profile_id, f"urn:xmpp:microblog:0:{index}", now),
            )
            node_ids.append(cursor.lastrowid)
        rows = (
            (
                node_ids[index % 10],
                f"item-{index}",
                "bench@example.org",
                index,
                f'<item xmlns="http://jabber.org/protocol/pubsub" id="item-{index}"><entry '
                f'xmlns="http://www.w3.org/2005/Atom"><title>Post {index}</title><content>'
                f"Words of post number {index} about harbours and ferries.</content></entry>"
                "</item>",
                json.dumps({"title": f"Post {index}", "content": f"Words of post {index}"}),
                f"Post {index} Words of post number {index} about harbours and ferries.",
                now - index,
                now - index,
            )
            for index in range(count)
        )
        db.executemany(
            "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, parsed, "
            "search_text, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def run(directory: Path, address: str) -> None:
    """Both scenarios, then the idle RSS."""
    bus = await MessageBus(bus_address=address).connect()
    launcher = Launcher(bus, address, directory / "home")
    await launcher.watch()

    progress("empty database")
    times = []
    for run_index in range(RUNS):
        elapsed, process = await launcher.launch(directory / f"empty{run_index}.sqlite")
        times.append(elapsed)
        await launcher.stop(process)
    median = statistics.median(times)
    emit(
        "start_to_name_owned_empty_db",
        median,
        "s",
        baseline=TARGET_SECONDS,
        ratio=median / TARGET_SECONDS,
    )

    progress(f"database with {ITEMS} cached items")
    full = directory / "full.sqlite"
    _, process = await launcher.launch(full)
    await launcher.stop(process)
    fill(full, ITEMS)
    times = []
    for _ in range(RUNS):
        elapsed, process = await launcher.launch(full)
        times.append(elapsed)
        await launcher.stop(process)
    median = statistics.median(times)
    emit(
        f"start_to_name_owned_{ITEMS // 1000}k_items",
        median,
        "s",
        baseline=TARGET_SECONDS,
        ratio=median / TARGET_SECONDS,
    )

    progress("idle RSS")
    _, process = await launcher.launch(full)
    await asyncio.sleep(3)
    rss = rss_mib(process.pid)
    await launcher.stop(process)
    emit("idle_rss", rss, "MiB", baseline=TARGET_RSS_MIB, ratio=rss / TARGET_RSS_MIB)
    bus.disconnect()


def main() -> None:
    """Run the benchmark on a private bus in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bus = start_bus(directory / "bus")
        address = bus.address
        try:
            asyncio.run(run(directory, address))
        finally:
            stop_bus(bus)


if __name__ == "__main__":
    main()
