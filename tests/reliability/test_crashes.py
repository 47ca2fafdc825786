"""``kill -9`` of roostd at named points, then a restart on the same database.

Each test is one round of :mod:`tests.fixtures.crash_rounds`: the database must pass its
integrity and full-text checks after the kill, every call that had returned must be
reflected after the restart, and no node may be served from the cache as complete when
it is not. ``bench/crash_points.py`` runs many more rounds of the same kinds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.crash import CrashRig, Ledger
from tests.fixtures.crash_rounds import (
    RoundOutcome,
    build_node,
    burst_round,
    entry,
    purge_round,
    roster_round,
    sync_round,
)
from tests.fixtures.dbus import PrivateBus
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.dbus]

SYNC_ITEMS = 1100


@pytest.fixture
def rig(tmp_path: Path, test_bus: PrivateBus, database_url: str) -> Iterator[CrashRig]:
    """Daemons one after another on the test's database (SQLite, then PostgreSQL)."""
    crash_rig = CrashRig(tmp_path / "rig", test_bus.address, database_url)
    yield crash_rig
    crash_rig.stop_all()


def assert_survived(outcome: RoundOutcome) -> None:
    assert outcome.checks, "the database was not checked"
    assert outcome.lost == [], f"lost after a kill at {outcome.point}"
    assert outcome.problems == [], f"after a kill at {outcome.point}"


@pytest.mark.parametrize("kill_after", [1, 60])
async def test_a_burst_of_writes_loses_nothing_acknowledged(rig: CrashRig, kill_after: int) -> None:
    ledger = Ledger()
    outcome = await burst_round(rig, ledger, kill_after)
    assert outcome.acknowledged >= kill_after
    assert_survived(outcome)
    # Again on the database the first kill left: what both rounds acknowledged is there.
    first = outcome.acknowledged
    outcome = await burst_round(rig, ledger, kill_after)
    assert outcome.acknowledged > first
    assert_survived(outcome)


# Prosody 0.12 takes time linear in a node's size for each publish (a node of 1,100
# items takes a minute or more to fill), so the node synchronised in batches lives on
# ejabberd; the long run syncs a smaller one on Prosody too.
@pytest.mark.xmpp
@pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True)
@pytest.mark.parametrize("point", ["in_progress", "progress:1", "progress:2", "completed"])
async def test_a_sync_killed_in_each_phase_is_not_served_until_resynchronised(
    rig: CrashRig, xmpp_server: XmppServer, point: str
) -> None:
    node = await build_node(xmpp_server, SYNC_ITEMS)
    outcome = await sync_round(rig, xmpp_server, Ledger(), node, SYNC_ITEMS, point)
    assert "not reached" not in outcome.point
    assert_survived(outcome)


@pytest.mark.xmpp
@pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True)
async def test_an_incremental_resync_killed_midway_resyncs_again(
    rig: CrashRig, xmpp_server: XmppServer
) -> None:
    node = await build_node(xmpp_server, SYNC_ITEMS)
    ledger = Ledger()
    assert_survived(await sync_round(rig, xmpp_server, ledger, node, SYNC_ITEMS, "completed"))
    # The node changes on the server; the restarted daemon's resync is then incremental,
    # and is killed as it starts.
    await build_more(xmpp_server, node)
    outcome = await sync_round(rig, xmpp_server, ledger, node, SYNC_ITEMS + 5, "in_progress")
    assert "not reached" not in outcome.point
    assert_survived(outcome)


async def build_more(server: XmppServer, node: str) -> None:
    async with XmppPeer(server, "alice") as alice:
        items = [(f"more{n}", entry(10_000 + n)) for n in range(5)]
        await alice.publish_many(node, items, service=server.pubsub_service)


@pytest.mark.xmpp
@pytest.mark.parametrize("older_than", [False, True], ids=["whole", "older_than"])
async def test_a_purge_killed_midway_never_serves_a_partial_node(
    rig: CrashRig, xmpp_server: XmppServer, older_than: bool
) -> None:
    nodes = [await build_node(xmpp_server, 20) for _ in range(3)]
    outcome = await purge_round(rig, xmpp_server, Ledger(), nodes, 20, older_than)
    assert "not reached" not in outcome.point
    assert_survived(outcome)


@pytest.mark.xmpp
@pytest.mark.parametrize("push", [1, 12])
async def test_a_roster_update_killed_midway_keeps_every_acknowledged_change(
    rig: CrashRig, xmpp_server: XmppServer, push: int
) -> None:
    (user,) = unique_names("crash", 1)
    await xmpp_server.register_many([user])
    outcome = await roster_round(rig, xmpp_server, Ledger(), user, push)
    assert "not reached" not in outcome.point
    assert_survived(outcome)
