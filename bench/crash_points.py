"""Crash benchmark: ``kill -9`` of roostd at many points, and what each restart finds.

Runs the rounds of ``tests/fixtures/crash_rounds.py`` (and ``crash_migrations.py``) many
times, on SQLite and on PostgreSQL (a throwaway cluster with durable settings, which
survives each kill), against ejabberd and Prosody on loopback, each kill point chosen
from a fixed seed so that a run can be repeated:

- a burst of writes (SetValue, SetParam, Profiles.Create from four clients), killed
  after a random number of acknowledged calls, round after round on one database;
- a migration from revision 0001, killed when the backup appears, while Alembic runs,
  during the full-text check, and after random delays from the start;
- a full sync killed at its start, at each stored batch and at its end, on a fresh
  database each round; an incremental resync killed at its start;
- a purge (whole, and by age) killed at the first node it marks;
- a roster update (changes over the bus and from another client) killed at a random
  roster push.

Prints one JSON line per kind of round (kill points tried, rounds, data lost, failures)
and the totals; data lost and failures must be 0. ``ROOST_BENCH_SMALL=1`` runs fewer
rounds. Progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit
from bench.postgres_cluster import bench_cluster
from tests.fixtures.crash import CrashRig, Ledger
from tests.fixtures.crash_migrations import (
    MIGRATION_POINTS,
    migration_round,
    prepare_old_database,
)
from tests.fixtures.crash_rounds import (
    RoundOutcome,
    build_node,
    burst_round,
    entry,
    purge_round,
    roster_round,
    sync_round,
)
from tests.fixtures.dbus import start_bus, stop_bus
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import EjabberdServer, ProsodyServer, XmppServer, free_port

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
SEED = 13
BURST_ROUNDS = 3 if SMALL else 10
MIGRATION_DELAYS = 1 if SMALL else 5
MIGRATION_ITEMS = 20_000 if SMALL else 40_000
# Stored in batches of 500: 1,100 items give two batch kill points, 2,600 five.
SYNC_ITEMS = 1_100 if SMALL else 2_600
PROSODY_SYNC_ITEMS = 600
PURGE_ROUNDS = 1 if SMALL else 2
ROSTER_ROUNDS = 1 if SMALL else 4


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[crash_points] {message}", file=sys.stderr, flush=True)


class Tally:
    """Outcomes by kind of round."""

    def __init__(self) -> None:
        self.outcomes: dict[str, list[RoundOutcome]] = defaultdict(list)
        self.points: dict[str, set[str]] = defaultdict(set)

    def add(self, where: str, outcome: RoundOutcome) -> None:
        """Record one round (and say how it went)."""
        self.outcomes[outcome.kind].append(outcome)
        self.points[outcome.kind].add(f"{where}: {outcome.point}")
        verdict = "ok" if outcome.ok else f"LOST {outcome.lost} PROBLEMS {outcome.problems}"
        progress(f"{outcome.kind} on {where}, killed at {outcome.point}: {verdict}")

    def report(self) -> None:
        """One line per kind, then the totals."""
        for kind, outcomes in sorted(self.outcomes.items()):
            emit("crash_points", f"{kind}: kill points", len(self.points[kind]), "points")
            emit("crash_points", f"{kind}: rounds", len(outcomes), "rounds")
            emit("crash_points", f"{kind}: data lost", lost(outcomes), "items", at_most=0)
            emit("crash_points", f"{kind}: failures", failures(outcomes), "rounds", at_most=0)
        everything = [o for outcomes in self.outcomes.values() for o in outcomes]
        emit("crash_points", "kill points tried", sum(map(len, self.points.values())), "points")
        emit("crash_points", "rounds", len(everything), "rounds")
        emit(
            "crash_points",
            "acknowledged writes checked (each restart checks all its database had)",
            sum(o.acknowledged for o in everything),
            "writes",
        )
        emit("crash_points", "data lost", lost(everything), "items", at_most=0)
        emit("crash_points", "failures", failures(everything), "rounds", at_most=0)


def lost(outcomes: list[RoundOutcome]) -> int:
    """Acknowledged writes missing after a restart, over ``outcomes``."""
    return sum(len(o.lost) for o in outcomes)


def failures(outcomes: list[RoundOutcome]) -> int:
    """Rounds with anything lost or wrong."""
    return sum(not o.ok for o in outcomes)


class Databases:
    """Fresh databases of each kind: a new SQLite file, or a new PostgreSQL database."""

    def __init__(self, workdir: Path, cluster: PostgresServer) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.count = 0

    def fresh(self, kind: str) -> str:
        """The URL of an empty database of ``kind``."""
        self.count += 1
        if kind == "postgresql":
            return self.cluster.url(self.cluster.create_database())
        folder = self.workdir / f"db{self.count}"
        folder.mkdir()
        return f"sqlite:///{folder / 'roost.sqlite'}"

    def rig(self, bus_address: str, kind: str) -> CrashRig:
        """A rig on a fresh database of ``kind``."""
        self.count += 1
        return CrashRig(self.workdir / f"rig{self.count}", bus_address, self.fresh(kind))


async def guarded(rig: CrashRig, work: Awaitable[RoundOutcome]) -> RoundOutcome:
    """Run a round; a round that breaks the rig counts as a failure, with its reason."""
    try:
        return await work
    except Exception as exc:
        logs = "\n".join(d.log_text()[-2000:] for d in rig.started[-1:])
        progress(f"round broke: {exc!r}\n{logs}")
        return RoundOutcome("rig", "broke", problems=[repr(exc)])
    finally:
        rig.stop_all()


async def bursts(address: str, dbs: Databases, tally: Tally, rng: random.Random) -> None:
    """Bursts of writes, killed after a random count, round after round on one database."""
    for kind in ("sqlite", "postgresql"):
        rig, ledger = dbs.rig(address, kind), Ledger()
        for _ in range(BURST_ROUNDS):
            after = rng.choice([1, 2, 5]) if rng.random() < 0.25 else rng.randint(1, 400)
            outcome = await guarded(rig, burst_round(rig, ledger, after))
            tally.add(kind, outcome)


async def migrations(address: str, dbs: Databases, tally: Tally, rng: random.Random) -> None:
    """Kills during the upgrade from 0001: at each named point, and after random delays."""
    for kind in ("sqlite", "postgresql"):
        points = [p for p in MIGRATION_POINTS if kind == "sqlite" or p != "backup"]
        points += [f"delay:{rng.uniform(0.2, 2.5):.3f}" for _ in range(MIGRATION_DELAYS)]
        for point in points:
            rig = dbs.rig(address, kind)
            await prepare_old_database(rig.database_url, MIGRATION_ITEMS)
            outcome = await guarded(rig, migration_round(rig, point, MIGRATION_ITEMS))
            tally.add(kind, outcome)


async def syncs(
    address: str, dbs: Databases, tally: Tally, server: XmppServer, kinds: list[str]
) -> None:
    """A full sync killed at each phase, each on a fresh database; then an incremental
    resync killed as it starts."""
    count = SYNC_ITEMS if server.kind == "ejabberd" else PROSODY_SYNC_ITEMS
    node = await build_node(server, count)
    batches = -(-count // 500)
    points = ["in_progress", *(f"progress:{n}" for n in range(1, batches)), "completed"]
    for kind in kinds:
        for point in points:
            rig = dbs.rig(address, kind)
            outcome = await guarded(rig, sync_round(rig, server, Ledger(), node, count, point))
            tally.add(f"{kind}/{server.kind}", outcome)
        # An incremental resync: the node cached whole, then changed on the server.
        rig, ledger = dbs.rig(address, kind), Ledger()
        outcome = await guarded(rig, sync_round(rig, server, ledger, node, count, "completed"))
        tally.add(f"{kind}/{server.kind}", outcome)
        extra = [(f"more-{kind}-{n}", entry(50_000 + n)) for n in range(5)]
        async with XmppPeer(server, "alice") as alice:
            await alice.publish_many(node, extra, service=server.pubsub_service)
        count += len(extra)
        outcome = await guarded(rig, sync_round(rig, server, ledger, node, count, "in_progress"))
        outcome.point = f"incremental {outcome.point}"
        tally.add(f"{kind}/{server.kind}", outcome)


async def purges(
    address: str, dbs: Databases, tally: Tally, server: XmppServer, kinds: list[str]
) -> None:
    """Purges killed at the first node they mark, whole and by age."""
    nodes = [await build_node(server, 20) for _ in range(4)]
    for kind in kinds:
        for _ in range(PURGE_ROUNDS):
            for older_than in (False, True):
                rig = dbs.rig(address, kind)
                outcome = await guarded(
                    rig,
                    purge_round(rig, server, Ledger(), nodes, 20, older_than),
                )
                tally.add(f"{kind}/{server.kind}", outcome)


async def rosters(
    address: str,
    dbs: Databases,
    tally: Tally,
    server: XmppServer,
    kinds: list[str],
    rng: random.Random,
) -> None:
    """Roster updates killed at a random push, each on a fresh account."""
    for kind in kinds:
        for _ in range(ROSTER_ROUNDS):
            (user,) = unique_names("crash", 1)
            await server.register_many([user])
            push = rng.randint(1, 25)
            rig = dbs.rig(address, kind)
            outcome = await guarded(rig, roster_round(rig, server, Ledger(), user, push))
            tally.add(f"{kind}/{server.kind}", outcome)


async def run(
    address: str, workdir: Path, cluster: PostgresServer, servers: list[XmppServer]
) -> None:
    """Every kind of round, then the report."""
    rng = random.Random(SEED)
    dbs, tally = Databases(workdir, cluster), Tally()
    progress("bursts of writes")
    await bursts(address, dbs, tally, rng)
    progress("migrations")
    await migrations(address, dbs, tally, rng)
    for server in servers:
        # PostgreSQL's part of a round with a server is the same whichever server fed
        # it: it runs against ejabberd only, as in the test suite.
        kinds = ["sqlite", "postgresql"] if server.kind == "ejabberd" else ["sqlite"]
        progress(f"syncs on {server.kind}")
        await syncs(address, dbs, tally, server, kinds)
        progress(f"purges on {server.kind}")
        await purges(address, dbs, tally, server, kinds)
        progress(f"roster updates on {server.kind}")
        await rosters(address, dbs, tally, server, kinds, rng)
    tally.report()


def main() -> None:
    """Start the bus, the XMPP servers and the PostgreSQL cluster; run every round."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="roost-bench-crash-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        bus = start_bus(workdir / "bus")
        servers: list[XmppServer] = []
        try:
            for kind in ("ejabberd", "prosody"):
                (workdir / kind).mkdir(mode=0o755)
                cls = EjabberdServer if kind == "ejabberd" else ProsodyServer
                server: EjabberdServer | ProsodyServer
                server = cls(kind=kind, data_dir=workdir / kind, port=free_port())
                servers.append(server)
                server.setup()
                if kind == "prosody":
                    server.start()
            with bench_cluster() as cluster:
                asyncio.run(run(bus.address, workdir, cluster, servers))
        finally:
            for running in servers:
                running.stop()
            stop_bus(bus)
    progress(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
