"""Large nodes without RSM: syncing a Prosody node of 100,000 items in bounded memory.

Prosody 0.12 answers a whole node in one stanza (about 45 MB for 100,000 items of 450
bytes). Roost reads that answer as it arrives, in pages, and stops reading the
connection while it is behind (roost.service.xmpp.item_stream). Measured on loopback in
one run, for each node size (10,000 and 100,000 items, written into Prosody's store
before anything reads them: tests/fixtures/prosody_store.py):

- ``sync_<n>k_peak_rss`` (target at 100k: 150 MiB): ``VmHWM`` of a fresh ``roostd``
  (``--log-level warning``, ``max_items_per_node`` raised to keep the node whole,
  ``request_timeout`` raised, since Prosody takes more than the default 60 s to start
  answering 100,000 items) whose only work is meeting the node and syncing it, its item
  count checked; ``sync_<n>k_seconds``, the sync's time;
- the baseline, ``whole_read_<n>k_peak_rss``: the peak of a plain slixmpp client (a
  process of its own, this script with ``--bare``) making the same whole read in one
  stanza, built whole as slixmpp builds every stanza; ``whole_read_<n>k_seconds``.

``ROOST_BENCH_SMALL=1`` for the 10,000-item node only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit, progress
from bench.loopback import COMMENTS, sync_node
from bench.memory import Process
from bench.server_reads import Bare
from roost.bridge.client import RoostClient
from tests.fixtures.dbus import RoostdLauncher, start_bus, stop_bus, wait_for_name
from tests.fixtures.prosody_store import write_prosody_node
from tests.fixtures.xmpp import ProsodyServer, free_port

BENCH = "large_nodes"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
SIZES = (10_000,) if SMALL else (10_000, 100_000)
TARGET_MIB = 150.0
ATOM = "http://www.w3.org/2005/Atom"
PUBSUB = "http://jabber.org/protocol/pubsub"
NODE_CONFIG = (
    "<configure><x xmlns='jabber:x:data' type='submit'>"
    "<field var='FORM_TYPE' type='hidden'>"
    "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
    "<field var='pubsub#max_items'><value>max</value></field></x></configure>"
)


def entries(count: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """XEP-0277 comments of about 450 bytes as an item."""
    return [
        (
            f"i{n:06d}",
            ATOM,
            [
                ("id", f"urn:uuid:{n}"),
                ("title", f"Comment {n}"),
                ("content", f"Body of comment {n}, " + "a few words long. " * 8),
                ("published", "2026-01-01T00:00:00Z"),
            ],
        )
        for n in range(count)
    ]


async def make_nodes(server: ProsodyServer) -> dict[int, str]:
    """A comments node of each size, created by alice, its items written into the store."""
    alice = Bare(server.jid("alice"), server.users["alice"])
    await alice.start(server.host, server.port)
    nodes: dict[int, str] = {}
    for size in SIZES:
        node = f"{COMMENTS}large{size}"
        await alice.ask(
            server.pubsub_service,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><create node='{node}'/>{NODE_CONFIG}</pubsub>",
        )
        write_prosody_node(server, node, server.jid("alice"), entries(size))
        nodes[size] = node
    alice.disconnect()
    return nodes


async def bare_read(
    host: str, port: int, jid: str, password: str, service: str, node: str
) -> dict[str, float]:
    """The baseline, in this process: one whole read; its item count and time."""
    bare = Bare(jid, password)
    await bare.start(host, port)
    started = time.perf_counter()
    # Prosody takes minutes to answer 100,000 items: far past slixmpp's default timeout.
    ids, _first, _last = await bare.items(service, node, answer_within=1800)
    figures = {"items": len(ids), "seconds": time.perf_counter() - started}
    bare.disconnect()
    return figures


def baseline(server: ProsodyServer, node: str, size: int) -> None:
    """The whole read in one stanza, by a plain client in a process of its own (its
    peak RSS, the interpreter and slixmpp included)."""
    jid, password, _options = server.credentials("carol")
    command = [sys.executable, __file__, "--bare", server.host, str(server.port), jid]
    command += [password, server.pubsub_service, node]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _err = child.communicate(timeout=3600)
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["items"] == size, figures
    label = f"{size // 1000}k"
    emit(BENCH, f"whole_read_{label}_peak_rss", figures["peak_mib"], "MiB")
    emit(BENCH, f"whole_read_{label}_seconds", figures["seconds"], "s")


async def synced(
    launcher: RoostdLauncher, config: Path, server: ProsodyServer, node: str, size: int
) -> None:
    """A fresh roostd's peak and time for meeting and syncing ``node``."""
    daemon = launcher.spawn("--log-level", "warning", "--config", str(config))
    wait_for_name(launcher.bus_address, timeout=120)
    client = await RoostClient.connect(launcher.bus_address)
    jid, password, options = server.credentials("bob")
    await client.create_profile("bob", jid, password, options)
    await client.connect_profile("bob")
    proc = Process(daemon.process.pid)
    before = proc.rss()
    proc.reset_peak()
    seconds = await sync_node(client, "bob", server.pubsub_service, node, within=3600)
    state = await client.get_node_state("bob", server.pubsub_service, node)
    assert state["item_count"] == size, state
    label = f"{size // 1000}k"
    at_most = TARGET_MIB if size >= 100_000 else None
    emit(BENCH, f"sync_{label}_peak_rss", proc.mib("VmHWM"), "MiB", at_most=at_most)
    emit(BENCH, f"sync_{label}_rss_before", before, "MiB")
    emit(BENCH, f"sync_{label}_seconds", seconds, "s")
    client.close()
    launcher.stop_all()


def main() -> None:
    """Prosody, a bus and a roostd per node size; the baseline beside each."""
    with tempfile.TemporaryDirectory(prefix="roost-bench-large-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        (workdir / "prosody").mkdir(mode=0o755)
        (workdir / "roostd").mkdir()
        server = ProsodyServer(kind="prosody", data_dir=workdir / "prosody", port=free_port())
        bus = start_bus(workdir / "bus")
        launcher = RoostdLauncher(workdir / "roostd", bus.address)
        config = workdir / "roost.toml"
        config.write_text("[cache]\nmax_items_per_node = 1000000\n[xmpp]\nrequest_timeout = 900\n")
        try:
            server.setup()
            server.start()
            nodes = asyncio.run(make_nodes(server))
            for size, node in nodes.items():
                progress(BENCH, f"{size} items: the whole read in one stanza")
                baseline(server, node, size)
                progress(BENCH, f"{size} items: roostd's sync")
                asyncio.run(synced(launcher, config, server, node, size))
        finally:
            launcher.stop_all()
            server.stop()
            stop_bus(bus)


def bare_main(args: list[str]) -> None:
    """``--bare HOST PORT JID PASSWORD SERVICE NODE``: the baseline's process."""
    host, port, jid, password, service, node = args
    figures = asyncio.run(bare_read(host, int(port), jid, password, service, node))
    figures["peak_mib"] = Process(os.getpid()).mib("VmHWM")
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        bare_main(sys.argv[2:])
    else:
        main()
