"""Server reads: GetItems with ``use_cache`` false beside a bare client's plain request.

For each server (Prosody, which has no RSM on pubsub, and ejabberd, which has), one node
of 1,000 items is read through Roost's service layer (``PubsubService.get_items``, the
cache bypassed) and by a bare slixmpp client making the equivalent plain XEP-0060 request,
in the same run, the two taking turns:

- ``newest_20``: ``max_items`` 20; the bare client sends ``<items max_items='20'/>``;
- ``after_20`` / ``before_20``: the node walked in pages of 20 from its first (its last)
  item, each page a sample; the bare client sends RSM ``<set/>``s with ``max`` 20 and the
  server's tokens, which a server without RSM ignores (it answers every item);
- ``item_ids_20``: 20 ids drawn at random each round, in random order; the bare client
  names the same ids in one ``<items/>``;
- ``whole``: no option; the bare client sends a bare ``<items/>``;
- ``first_read_newest_20``: the first ``GetItems`` (``max_items`` 20, the cache on) of a
  new backend on a new database, which meets the node for the first time: the server's
  answer with the cache's analysis of the node beside it; against the bare client's
  ``max_items`` 20 right after.

Every answer is checked before anything is reported: Roost's items are the right ones in
node order with the node's count, and the bare client got the items it asked for (every
item, where the server ignores RSM).

Then what each plain request costs the server, the bare client alone (``plain_*``, against
the plain whole read): ``max_items`` 20, the node's item listing (disco#items), 1 and 20
items by id, and ``max_items`` 20 with the listing asked at once.

Prints JSON lines through bench/figures.py (median against the bare client's, target
``TARGET`` times it; the upper percentile the samples support). Progress goes to stderr.
``ROOST_BENCH_SMALL=1`` for a 200-item node and fewer rounds; ``ROOST_BENCH_SERVERS=prosody``
(or ``ejabberd``) for one server only.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slixmpp import ClientXMPP

from bench.figures import emit, progress, spread, upper
from roost.service.daemon import daemon_runner
from roost.service.events import EventHub
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.rsm import decode_token
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.backend import running_backend
from tests.fixtures.xmpp import EjabberdServer, ProsodyServer, XmppServer, free_port

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
ITEMS = 200 if SMALL else 1_000
PAGE = 20
# Samples of each single-request shape, and walks of each direction (ITEMS / PAGE pages
# each): 100 samples at least, so that a p99 is one (bench/figures.py).
ROUNDS = 20 if SMALL else 100
WALKS = 1 if SMALL else 2
# Samples of the first read (each a new backend) and of each plain request's cost.
FIRST_READS = 3 if SMALL else 10
COST_ROUNDS = 5 if SMALL else 20
# Seconds a new backend's session is left to settle before its first read.
SETTLE = 1.0
# Roost's median against the bare client's, at most.
TARGET = 1.1

PUBSUB = "http://jabber.org/protocol/pubsub"
RSM = "http://jabber.org/protocol/rsm"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def entry(n: int) -> str:
    return f"<entry xmlns='urn:example:bench'><n>{n}</n><body>{'x' * 200}</body></entry>"


def say(message: str) -> None:
    progress("server_reads", message)


class Bare(ClientXMPP):  # type: ignore[misc]
    """The baseline: a plain slixmpp client, requests written by hand."""

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

    async def ask(
        self, service: str, kind: str, xml: str, answer_within: float | None = None
    ) -> ET.Element:
        """The answer to an iq of ``kind`` holding ``xml`` (within slixmpp's default
        response timeout unless ``answer_within`` says otherwise)."""
        iq = self.make_iq_get(ito=service) if kind == "get" else self.make_iq_set(ito=service)
        iq.append(ET.fromstring(xml))
        reply: ET.Element = (await iq.send(timeout=answer_within)).xml
        return reply

    async def items(
        self,
        service: str,
        node: str,
        inner: str = "",
        attrs: str = "",
        rsm: str = "",
        answer_within: float | None = None,
    ) -> tuple[list[str], str | None, str | None]:
        """(item ids, RSM first, RSM last) of an items request."""
        reply = await self.ask(
            service,
            "get",
            f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{attrs}>{inner}</items>{rsm}</pubsub>",
            answer_within,
        )
        ids = [i.get("id", "") for i in reply.iter(f"{{{PUBSUB}}}item")]
        return ids, reply.findtext(f".//{{{RSM}}}first"), reply.findtext(f".//{{{RSM}}}last")


@dataclass
class Samples:
    """One shape's times, Roost's and the bare client's, in seconds."""

    roost: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)


async def timed(times: list[float], pending: Awaitable[Any]) -> Any:
    """``pending``'s result, its time added to ``times`` (a coroutine does nothing until
    awaited, so the clock starts with the request)."""
    start = time.perf_counter()
    result = await pending
    times.append(time.perf_counter() - start)
    return result


class Reads:
    """One server's node, read by Roost and by the bare client."""

    def __init__(
        self, server: XmppServer, roost: PubsubService, bare: Bare, node: str, order: list[str]
    ) -> None:
        self.kind = server.kind
        self.rsm = server.has_rsm
        self.service = server.pubsub_service
        self.roost = roost
        self.bare = bare
        self.node = node
        self.order = order
        self.samples: dict[str, Samples] = {}

    def of(self, shape: str) -> Samples:
        return self.samples.setdefault(shape, Samples())

    async def get(self, **options: Any) -> ItemsReply:
        request = ItemsRequest.from_options({**options, "use_cache": False})
        return await self.roost.get_items("alice", self.service, self.node, request)

    def check(self, reply: ItemsReply, wanted: list[str], what: str) -> None:
        got = [item.id for item in reply.items]
        assert got == wanted, f"{self.kind} {what}: Roost answered {got[:5]}…, not {wanted[:5]}…"

    async def newest(self, rounds: int) -> None:
        samples = self.of("newest_20")
        for n in range(rounds):
            for side in (0, 1) if n % 2 else (1, 0):
                if side == 0:
                    reply = await timed(samples.roost, self.get(max_items=PAGE))
                    self.check(reply, self.order[-PAGE:], "newest 20")
                    assert reply.rsm_count == len(self.order) and not reply.complete
                else:
                    ids, _, _ = await timed(
                        samples.bare,
                        self.bare.items(self.service, self.node, attrs=f" max_items='{PAGE}'"),
                    )
                    assert sorted(ids) == sorted(self.order[-PAGE:]), f"bare newest: {ids}"

    async def walk(self, direction: str) -> None:
        """One walk of the node in pages of 20 by each side, a page each in turn."""
        samples = self.of(f"{direction}_20")
        token, server_token = "", ""
        roost_pages: list[list[str]] = []
        bare_pages: list[list[str]] = []
        done_roost = done_bare = False
        while not (done_roost and done_bare):
            if not done_roost:
                reply = await timed(samples.roost, self.get(max_items=PAGE, **{direction: token}))
                assert reply.rsm_count == len(self.order), reply.rsm_count
                roost_pages.append([item.id for item in reply.items])
                done_roost = reply.complete
                token = (reply.rsm_first if direction == "before" else reply.rsm_last) or ""
                assert len(roost_pages) <= len(self.order), "Roost's walk does not end"
            if not done_bare:
                anchor = f"<{direction}>{server_token}</{direction}>" if server_token else ""
                if direction == "before" and not server_token:
                    anchor = "<before/>"
                rsm = f"<set xmlns='{RSM}'><max>{PAGE}</max>{anchor}</set>"
                ids, first, last = await timed(
                    samples.bare, self.bare.items(self.service, self.node, rsm=rsm)
                )
                bare_pages.append(ids)
                if not self.rsm:
                    # The server ignores RSM: every item, every time. As many requests as
                    # Roost's walk made.
                    assert len(ids) == len(self.order), f"bare page: {len(ids)} items"
                    done_bare = len(bare_pages) == len(roost_pages) and done_roost
                else:
                    server_token = (first if direction == "before" else last) or ""
                    held = sum(len(page) for page in bare_pages)
                    done_bare = len(ids) < PAGE or not server_token or held >= len(self.order)
        if direction == "before":
            roost_pages.reverse()
            bare_pages.reverse()
        walked = [item_id for page in roost_pages for item_id in page]
        assert walked == self.order, f"{self.kind} {direction} walk: the pages are not the node"
        assert all(len(page) == PAGE for page in roost_pages[:-1] if direction == "after")
        if self.rsm:
            bare_walked = [item_id for page in bare_pages for item_id in page]
            assert bare_walked == self.order, f"{self.kind} bare {direction} walk"

    async def by_ids(self, rounds: int) -> None:
        samples = self.of("item_ids_20")
        chooser = random.Random(len(self.order))
        for n in range(rounds):
            asked = chooser.sample(self.order, PAGE)
            wanted = [i for i in self.order if i in set(asked)]
            for side in (0, 1) if n % 2 else (1, 0):
                if side == 0:
                    reply = await timed(samples.roost, self.get(item_ids=asked))
                    self.check(reply, wanted, "20 item ids")
                else:
                    inner = "".join(f"<item id='{i}'/>" for i in asked)
                    ids, _, _ = await timed(
                        samples.bare, self.bare.items(self.service, self.node, inner)
                    )
                    assert sorted(ids) == sorted(asked), f"bare by ids: {len(ids)} items"

    async def whole(self, rounds: int) -> None:
        samples = self.of("whole")
        for n in range(rounds):
            for side in (0, 1) if n % 2 else (1, 0):
                if side == 0:
                    reply = await timed(samples.roost, self.get())
                    self.check(reply, self.order, "the whole node")
                    assert reply.complete and reply.rsm_count == len(self.order)
                else:
                    ids, _, _ = await timed(samples.bare, self.bare.items(self.service, self.node))
                    assert sorted(ids) == sorted(self.order), f"bare whole: {len(ids)} items"

    async def first_reads(self, server: XmppServer, workdir: Path, rounds: int) -> None:
        """The first read of the node by each of ``rounds`` new backends (the cache on,
        the node new to it), each beside a bare ``max_items`` 20."""
        samples = self.of("first_read_newest_20")
        for n in range(rounds):
            db = workdir / f"first-{self.kind}-{n}.sqlite"
            async with running_backend(db, server, ["alice"]) as (backend, _log):
                await backend.connect("alice")
                # What the login sets off (roster, presence, capabilities) settles first.
                await asyncio.sleep(SETTLE)
                reply = await timed(
                    samples.roost,
                    backend.pubsub.get_items("alice", self.service, self.node, {"max_items": PAGE}),
                )
                assert not reply.from_cache
                self.check(reply, self.order[-PAGE:], "first read, newest 20")
                ids, _, _ = await timed(
                    samples.bare,
                    self.bare.items(self.service, self.node, attrs=f" max_items='{PAGE}'"),
                )
                assert sorted(ids) == sorted(self.order[-PAGE:]), f"bare newest: {ids}"

    def report(self) -> None:
        bench = f"server_reads-{self.kind}"
        for shape, samples in self.samples.items():
            roost = [t * 1000 for t in samples.roost]
            bare = [t * 1000 for t in samples.bare]
            count = min(len(roost), len(bare))
            emit(
                bench,
                f"{shape}_median",
                spread(roost)["median"],
                "ms",
                baseline=spread(bare)["median"],
                ratio_at_most=TARGET,
                samples=len(roost),
                baseline_samples=len(bare),
            )
            name, _ = upper(roost[:count])
            emit(
                bench,
                f"{shape}_{name}",
                spread(roost)[name],
                "ms",
                baseline=spread(bare)[name],
                samples=len(roost),
            )


async def plain_costs(server: XmppServer, bare: Bare, node: str, order: list[str]) -> None:
    """What each plain request costs the server, seen by the bare client alone, against
    the plain whole read."""
    service = server.pubsub_service
    chooser = random.Random(7)

    async def whole() -> int:
        return len((await bare.items(service, node))[0])

    async def newest() -> int:
        return len((await bare.items(service, node, attrs=f" max_items='{PAGE}'"))[0])

    async def listing() -> int:
        reply = await bare.ask(service, "get", f"<query xmlns='{DISCO_ITEMS}' node='{node}'/>")
        return len(reply.findall(f".//{{{DISCO_ITEMS}}}item"))

    def by_ids(k: int) -> Callable[[], Awaitable[int]]:
        async def read() -> int:
            inner = "".join(f"<item id='{i}'/>" for i in chooser.sample(order, k))
            return len((await bare.items(service, node, inner))[0])

        return read

    async def newest_and_listing() -> int:
        found, listed = await asyncio.gather(newest(), listing())
        return found + listed

    plans: list[tuple[str, Callable[[], Awaitable[int]], int]] = [
        ("whole", whole, len(order)),
        ("newest_20", newest, PAGE),
        ("listing", listing, len(order)),
        ("1_by_id", by_ids(1), 1),
        ("20_by_id", by_ids(PAGE), PAGE),
        ("newest_20_with_listing", newest_and_listing, PAGE + len(order)),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in plans}
    for _round in range(COST_ROUNDS):
        for name, read, expected in plans:
            got = await timed(times[name], read())
            assert got == expected, f"{server.kind} plain {name}: {got} items, not {expected}"
    whole_median = spread(times["whole"])["median"] * 1000
    for name, _, _ in plans:
        emit(
            f"server_reads-{server.kind}",
            f"plain_{name}_median",
            spread(times[name])["median"] * 1000,
            "ms",
            baseline=whole_median,
            samples=len(times[name]),
        )


async def fill(server: XmppServer, roost: PubsubService, bare: Bare) -> tuple[str, list[str]]:
    """A new node of ITEMS items, published by the bare client (a few at a time); its
    ids in node order, as the server pages them."""
    service = server.pubsub_service
    node = f"reads-{uuid.uuid4().hex[:8]}"
    await roost.create_node(
        "alice",
        service,
        node,
        {"pubsub#max_items": "10000", "pubsub#publish_model": "open"},
    )
    limit = asyncio.Semaphore(20)

    async def publish(n: int) -> None:
        async with limit:
            await bare.ask(
                service,
                "set",
                f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
                f"<item id='r{n:04d}'>{entry(n)}</item></publish></pubsub>",
            )

    started = time.perf_counter()
    await asyncio.gather(*(publish(n) for n in range(ITEMS)))
    say(f"{server.kind}: {ITEMS} items published in {time.perf_counter() - started:.1f} s")
    every = await roost.get_items(
        "alice", service, node, ItemsRequest(after="", max_items=10_000, use_cache=False)
    )
    order = [item.id for item in every.items]
    assert sorted(order) == [f"r{n:04d}" for n in range(ITEMS)], len(order)
    assert every.complete and every.rsm_count == ITEMS
    assert decode_token(every.rsm_last or "")[0] == order[-1]
    return node, order


async def measure(server: XmppServer, workdir: Path) -> None:
    hub = EventHub()

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        return server.credentials(name)

    sessions = SessionManager(lookup, hub)
    roost = PubsubService(sessions, hub)
    await sessions.connect("alice")
    bare = Bare(server.jid("bob"), server.users["bob"])
    await bare.start(server.host, server.port)
    try:
        node, order = await fill(server, roost, bare)
        reads = Reads(server, roost, bare, node, order)
        # Warm-up: both sides' first requests (Roost learns the service's RSM support and
        # the direction of its listings).
        await reads.newest(2)
        await reads.by_ids(2)
        reads.samples.clear()
        say(f"{server.kind}: newest 20")
        await reads.newest(ROUNDS)
        for direction in ("after", "before"):
            say(f"{server.kind}: pages of 20, {direction}")
            for _walk in range(WALKS):
                await reads.walk(direction)
        say(f"{server.kind}: 20 item ids")
        await reads.by_ids(ROUNDS)
        say(f"{server.kind}: the whole node")
        await reads.whole(ROUNDS)
        say(f"{server.kind}: first reads, the cache on")
        await reads.first_reads(server, workdir, FIRST_READS)
        reads.report()
        say(f"{server.kind}: what plain requests cost")
        await plain_costs(server, bare, node, order)
    finally:
        bare.disconnect()
        await sessions.close()


def main() -> None:
    kinds = os.environ.get("ROOST_BENCH_SERVERS", "prosody,ejabberd").split(",")
    with tempfile.TemporaryDirectory(prefix="roost-bench-reads-") as tmp:
        Path(tmp).chmod(0o755)
        for kind, cls in (("prosody", ProsodyServer), ("ejabberd", EjabberdServer)):
            if kind not in kinds:
                continue
            data = Path(tmp) / kind
            data.mkdir(mode=0o755)
            server = cls(kind=kind, data_dir=data, port=free_port())
            try:
                server.setup()
                if kind == "prosody":
                    server.start()
                # Roost's side runs in this process: as roostd runs it.
                with daemon_runner() as runner:
                    runner.run(measure(server, Path(tmp)))
            finally:
                server.stop()


if __name__ == "__main__":
    main()
