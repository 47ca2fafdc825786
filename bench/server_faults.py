"""Server faults, long: many rounds of random faults during syncs and ordinary calls.

A backend (the daemon's service layer) reaches a Prosody on loopback through the tests'
fault proxy (``tests/fixtures/fault_proxy.py``). Each round picks what runs (a full sync
of a node of ``ITEMS`` items, made beforehand by another client; a ``GetItems`` with
``use_cache`` false; a ``Publish``; a contacts ``Add``) and a fault (a cut, a reset, a
stall, a slow link), struck mid-stanza where a random item's id passes (or, for a
request of a few bytes, while it is held by the proxy). Then the server comes back and
the round checks that Roost recovers: reconnected, the node ``completed`` with exactly
the server's items.

Judged on every round: a failing call ends with a named error (``NotConnected``,
``Xmpp.RemoteServerTimeout``) within its bound; while a node's sync is broken, no read is
answered from the cache (a *partial node served*, which must stay 0); the backend answers
other calls throughout.

Prints JSON lines through bench/figures.py: rounds, faults injected (by kind), calls made,
errors by name, partial nodes served, the slowest failing call and the recovery times.
``ROOST_BENCH_SMALL=1`` for a few rounds.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit, progress, spread
from roost.service.backend import Backend
from roost.service.errors import RoostError
from roost.service.events import ProfileConnected
from tests.fixtures.backend import EventLog
from tests.fixtures.fault_proxy import Fault
from tests.fixtures.xmpp import ProsodyServer, free_port
from tests.reliability.test_server_faults import (
    CALL_BOUND,
    ITEMS,
    LOST_BOUND,
    behind_proxy,
    item_id,
    node_with_items,
    payload,
    wait_node_state,
)

BENCH = "server_faults"
SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
ROUNDS = 8 if SMALL else 40
SEED = 13
PHASES = ("sync", "get_items", "publish", "add")
FAULTS = (Fault.CUT, Fault.RESET, Fault.STALL, Fault.SLOW)
# A slow link: fast enough for a request to be answered within the request timeout.
SLOW_BANDWIDTH = 150_000.0
# Where bob publishes: a node of his own PEP service (the shared node is alice's).
OWN_NODE = "urn:example:faults:own"


class Tally:
    """What the rounds did."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.successes = 0
        self.partial_served = 0
        self.not_recovered = 0
        self.out_of_bound = 0
        self.slowest_error = 0.0
        self.recoveries: list[float] = []

    async def call(self, what: Awaitable[object], bound: float) -> str:
        """Make one call; its outcome's name (``ok`` or the error's)."""
        self.calls += 1
        started = time.monotonic()
        try:
            await asyncio.wait_for(what, bound * 3)
        except RoostError as exc:
            spent = time.monotonic() - started
            self.slowest_error = max(self.slowest_error, spent)
            self.out_of_bound += spent > bound
            self.errors[exc.name] += 1
            return exc.name
        self.successes += 1
        return "ok"


async def reconnected(backend: Backend, log: EventLog) -> None:
    """Wait until bob's session is up (a reconnection after a fault)."""
    while not backend.sessions.is_connected("bob"):
        mark = len(log.events)
        await log.wait_for(lambda e: isinstance(e, ProfileConnected), "a reconnection", after=mark)


async def run(server: ProsodyServer, tmp: Path) -> None:
    rng = random.Random(SEED)
    svc = server.pubsub_service
    progress(BENCH, f"a node of {ITEMS} items")
    node = await node_with_items(server, ITEMS)
    tally = Tally()
    async with behind_proxy(tmp, server, "bench") as (backend, log, proxy):
        for round_no in range(ROUNDS):
            phase, fault = rng.choice(PHASES), rng.choice(FAULTS)
            progress(BENCH, f"round {round_no + 1}/{ROUNDS}: {fault.value} during {phase}")
            await reconnected(backend, log)
            if fault is Fault.SLOW:
                proxy.slow(SLOW_BANDWIDTH)
            bound = CALL_BOUND if fault in (Fault.STALL, Fault.SLOW) else LOST_BOUND
            if phase == "sync":
                # Out of the cache, so that the sync is a full one, mid-page.
                await backend.pubsub.purge_cache({"nodes": [node]})
                if fault is not Fault.SLOW:
                    proxy.arm(fault, pattern=item_id(rng.randrange(ITEMS)).encode(), after=50)
                mark = len(log.events)
                tally.calls += 1
                await backend.pubsub.sync("bob", svc, node)
                await log.wait_for(
                    lambda e: (
                        getattr(e, "node", None) == node
                        and getattr(e, "state", None) in ("completed", "error")
                    ),
                    "the sync's end",
                    after=mark,
                )
                ended = (await backend.pubsub.get_node_state("bob", svc, node))["state"]
                if ended == "completed":
                    tally.successes += 1
                else:
                    tally.errors["sync ended in error"] += 1
                    # Broken: nothing may come from the cache until a full resync.
                    tally.calls += 1
                    try:
                        reply = await backend.pubsub.get_items("bob", svc, node, {})
                    except RoostError as exc:
                        tally.errors[exc.name] += 1
                    else:
                        tally.partial_served += reply.from_cache
            elif phase == "get_items":
                if fault is not Fault.SLOW:
                    proxy.arm(fault, pattern=item_id(rng.randrange(ITEMS)).encode(), after=50)
                await tally.call(
                    backend.pubsub.get_items("bob", svc, node, {"use_cache": False}), bound
                )
            else:
                call = (
                    backend.pubsub.publish("bob", "", OWN_NODE, "", payload(0), {})
                    if phase == "publish"
                    else backend.contacts.add("bob", "carol@localhost", {"subscribe": False})
                )
                if fault is Fault.SLOW:
                    await tally.call(call, bound)
                else:
                    proxy.stall()
                    read = proxy.up_read
                    task = asyncio.ensure_future(tally.call(call, bound))
                    if fault is not Fault.STALL:
                        await proxy.wait_sent(read, LOST_BOUND)
                        (proxy.cut if fault is Fault.CUT else proxy.reset)()
                    await task
            # The server comes back: the node completes again, with the server's items.
            started = time.monotonic()
            mark = len(log.events)
            proxy.resume()
            await reconnected(backend, log)
            state = await backend.pubsub.get_node_state("bob", svc, node)
            if not state["current"]:
                await backend.pubsub.sync("bob", svc, node)
                await wait_node_state(log, node, "completed", mark)
            tally.recoveries.append(time.monotonic() - started)
            fresh = await backend.pubsub.get_items("bob", svc, node, {"use_cache": False})
            cached = await backend.pubsub.get_items("bob", svc, node, {})
            if not cached.from_cache:
                tally.not_recovered += 1
                state = await backend.pubsub.get_node_state("bob", svc, node)
                progress(BENCH, f"not served from the cache after recovering: {state}")
            elif [i.id for i in cached.items] != [i.id for i in fresh.items]:
                tally.partial_served += 1
            assert await backend.profiles.list() == ["bob"]
        injected = Counter(f.value for f in proxy.injected)
    emit(BENCH, "rounds", ROUNDS, "rounds", seed=SEED)
    emit(BENCH, "faults_injected", sum(injected.values()), "faults", **dict(injected))
    emit(BENCH, "calls", tally.calls, "calls", successes=tally.successes)
    emit(BENCH, "errors", sum(tally.errors.values()), "errors", **dict(tally.errors))
    emit(BENCH, "partial_nodes_served", tally.partial_served, "nodes", at_most=0)
    emit(BENCH, "rounds_not_recovered", tally.not_recovered, "rounds", at_most=0)
    emit(BENCH, "errors_past_bound", tally.out_of_bound, "calls", at_most=0)
    emit(BENCH, "slowest_error", tally.slowest_error, "s", at_most=CALL_BOUND)
    emit(BENCH, "recovery", spread(tally.recoveries)["median"], "s", **spread(tally.recoveries))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="roost-bench-faults-") as tmp:
        Path(tmp).chmod(0o755)
        data = Path(tmp) / "prosody"
        data.mkdir(mode=0o755)
        server = ProsodyServer(kind="prosody", data_dir=data, port=free_port())
        try:
            server.setup()
            server.start()
            asyncio.run(run(server, Path(tmp)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
