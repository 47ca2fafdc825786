"""Publish and fetch rates through Roost's service layer beside a bare slixmpp client.

Both run in the same run against the same freshly started server, Prosody then ejabberd
(``--server`` picks one); they fetch the same node, and publish to a node each. Prints
JSON lines through bench/figures.py: baseline is the bare client's figure, ratio Roost /
bare (for times, lower is better); fetch times carry their target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Variant
from slixmpp import ClientXMPP

from bench.figures import emit
from roost.bridge.client import RoostClient
from roost.bridge.constants import PUBSUB_INTERFACE
from roost.service.daemon import daemon_runner
from roost.service.events import EventHub
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import RoostdLauncher, start_bus, stop_bus
from tests.fixtures.xmpp import EjabberdServer, ProsodyServer, XmppServer, free_port

PUBSUB = "http://jabber.org/protocol/pubsub"
RSM = "http://jabber.org/protocol/rsm"
# Fetch times are the median of this many rounds, Roost and the bare client alternating.
FETCH_ROUNDS = 7
# Roost's fetch time against the bare client's, at most.
FETCH_TARGET_RATIO = 1.3


def entry(n: int) -> str:
    return f"<entry xmlns='urn:example:bench'><n>{n}</n><body>{'x' * 200}</body></entry>"


class Bare(ClientXMPP):  # type: ignore[misc]
    """The baseline: a plain slixmpp client, requests built by hand."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_plaintext, self.enable_starttls, self.enable_direct_tls = True, False, False
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True

    async def start(self, host: str, port: int) -> None:
        ready = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", lambda _e: ready.set_result(None))
        self.connect(host, port)
        await ready

    async def publish(self, service: str, node: str, n: int) -> None:
        iq = self.make_iq_set(ito=service)
        iq.append(
            ET.fromstring(
                f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
                f"<item id='b{n}'>{entry(n)}</item></publish></pubsub>"
            )
        )
        await iq.send()

    async def fetch(self, service: str, node: str, rsm: bool) -> int:
        total, after = 0, ""
        while True:
            rsm_xml = f"<set xmlns='{RSM}'><max>1000</max>{after}</set>" if rsm else ""
            iq = self.make_iq_get(ito=service)
            iq.append(
                ET.fromstring(f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/>{rsm_xml}</pubsub>")
            )
            reply = (await iq.send()).xml
            items = reply.findall(f".//{{{PUBSUB}}}item")
            total += len(items)
            last = reply.findtext(f".//{{{RSM}}}last")
            if not rsm or not items or last is None or len(items) < 1000:
                return total
            after = f"<after>{last}</after>"


async def roost_fetch_all(roost: PubsubService, service: str, node: str) -> int:
    """Walk the node with GetItems pages of 1,000, as a frontend would."""
    got, after = 0, ""
    while True:
        reply = await roost.get_items(
            "alice", service, node, ItemsRequest(max_items=1000, after=after, use_cache=False)
        )
        got += len(reply.items)
        if reply.complete or reply.rsm_last is None:
            return got
        after = reply.rsm_last


async def bus_fetch_all(client: RoostClient, service: str, node: str) -> int:
    """Walk the node with GetItems over the bus, pages of 1,000, cache bypassed."""
    got, after = 0, ""
    while True:
        options = {
            "max_items": Variant("u", 1000),
            "after": Variant("s", after),
            "use_cache": Variant("b", False),
        }
        items, meta = await client.call(
            PUBSUB_INTERFACE, "GetItems", "sssa{sv}", ["alice", service, node, options]
        )
        got += len(items)
        if meta["complete"].value or "rsm_last" not in meta:
            return got
        after = meta["rsm_last"].value


async def bus_round(
    bus: RoostClient, bare: Bare, service: str, count: int, bare_pub: float, rsm: bool
) -> None:
    """The same publish and fetch over D-Bus through roostd, on a node of its own."""
    node = f"bench-{uuid.uuid4().hex[:8]}"
    await bus.call(
        PUBSUB_INTERFACE,
        "CreateNode",
        "sssa{sv}",
        ["alice", service, node, {"pubsub#max_items": Variant("s", "10000")}],
    )
    start = time.perf_counter()
    for n in range(count):
        await bus.call(
            PUBSUB_INTERFACE,
            "Publish",
            "sssssa{sv}",
            ["alice", service, node, f"d{n}", entry(n), {}],
        )
    bus_pub = time.perf_counter() - start
    line(f"bus_publish_{count}_rate", count / bus_pub, "items/s", count / bare_pub)
    bus_times, bare_times = [], []
    for _round in range(FETCH_ROUNDS):
        start = time.perf_counter()
        assert await bus_fetch_all(bus, service, node) == count
        bus_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert await bare.fetch(service, node, rsm) == count
        bare_times.append(time.perf_counter() - start)
    line(
        f"bus_fetch_{count}_time",
        statistics.median(bus_times),
        "s",
        statistics.median(bare_times),
    )


# The server this run measures, named in every figure.
SERVER_KIND: list[str] = []


def line(metric: str, value: float, unit: str, baseline: float) -> None:
    """One figure beside the bare client's; a fetch time has its target."""
    emit(
        f"pubsub-{SERVER_KIND[-1]}",
        metric,
        value,
        unit,
        baseline=baseline,
        ratio_at_most=FETCH_TARGET_RATIO if metric.endswith("_time") else None,
        samples=FETCH_ROUNDS if metric.endswith("_time") else None,
    )


async def run(server: XmppServer, bus_address: str | None) -> None:
    hub = EventHub()

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, hub)
    roost = PubsubService(sessions, hub)
    await sessions.connect("alice")
    bare = Bare(server.jid("bob"), server.users["bob"])
    await bare.start(server.host, server.port)
    service = server.pubsub_service
    bus: RoostClient | None = None
    if bus_address is not None:
        bus = await RoostClient.connect(bus_address)
        jid, password, options = server.credentials("alice")
        await bus.create_profile("alice", jid, password, options)
        await bus.connect_profile("alice")
    try:
        for count in (200, 1000):
            node = f"bench-{uuid.uuid4().hex[:8]}"
            await roost.create_node("alice", service, node, {"pubsub#max_items": "10000"})
            bare_node = f"bench-{uuid.uuid4().hex[:8]}"
            await roost.create_node(
                "alice",
                service,
                bare_node,
                {
                    "pubsub#max_items": "10000",
                    "pubsub#publish_model": "open",
                    "pubsub#access_model": "open",
                },
            )
            start = time.perf_counter()
            for n in range(count):
                await bare.publish(service, bare_node, n)
            bare_pub = time.perf_counter() - start
            start = time.perf_counter()
            for n in range(count):
                await roost.publish("alice", service, node, f"r{n}", entry(n))
            roost_pub = time.perf_counter() - start
            line(f"publish_{count}_rate", count / roost_pub, "items/s", count / bare_pub)

            rsm = await roost.server.server_supports_rsm("alice", service, node)
            bare_times, roost_times = [], []
            for _round in range(FETCH_ROUNDS):
                start = time.perf_counter()
                fetched = await bare.fetch(service, node, rsm)
                bare_times.append(time.perf_counter() - start)
                assert fetched == count, fetched
                start = time.perf_counter()
                got = await roost_fetch_all(roost, service, node)
                roost_times.append(time.perf_counter() - start)
                assert got == count, got
            bare_fetch, roost_fetch = statistics.median(bare_times), statistics.median(roost_times)
            line(f"fetch_{count}_time", roost_fetch, "s", bare_fetch)
            if bus is not None:
                await bus_round(bus, bare, service, count, bare_pub, rsm)
    finally:
        bare.disconnect()
        await sessions.close()
        if bus is not None:
            bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--server", choices=("both", "prosody", "ejabberd"), default="both", help="both: one run"
    )
    parser.add_argument("--no-bus", action="store_true", help="skip the runs over D-Bus")
    args = parser.parse_args()
    for kind in ("prosody", "ejabberd") if args.server == "both" else (args.server,):
        measure(kind, bus=not args.no_bus)


def measure(kind: str, *, bus: bool) -> None:
    """Start ``kind``'s server (and a roostd on a private bus) and measure."""
    SERVER_KIND.append(kind)
    with tempfile.TemporaryDirectory(prefix=f"roost-bench-{kind}-") as tmp:
        data_dir = Path(tmp) / "server"
        data_dir.mkdir()
        data_dir.chmod(0o755)
        Path(tmp).chmod(0o755)
        server: ProsodyServer | EjabberdServer
        if kind == "prosody":
            server = ProsodyServer(kind="prosody", data_dir=data_dir, port=free_port())
            server.setup()
            server.start()
        else:
            server = EjabberdServer(kind="ejabberd", data_dir=data_dir, port=free_port())
            server.setup()
        private = start_bus(Path(tmp) / "bus") if bus else None
        launcher = None
        try:
            if private is not None:
                (Path(tmp) / "roostd").mkdir()
                launcher = RoostdLauncher(Path(tmp) / "roostd", private.address)
                launcher.start("--log-level", "warning")
            # Without the bus, Roost's side runs in this process: as roostd runs it.
            with daemon_runner() as runner:
                runner.run(run(server, private.address if private else None))
        finally:
            if launcher is not None:
                launcher.stop_all()
            if private is not None:
                stop_bus(private)
            server.stop()


if __name__ == "__main__":
    main()
