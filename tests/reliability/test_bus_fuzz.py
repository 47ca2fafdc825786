"""Hostile input on the bus: random calls of every method at a roostd with a connected
profile and a synchronised node (the short version; bench/bus_fuzz.py is the long one).

Each answer is a success or a named Roost error (never ``Internal``, never a traceback;
dbus-fast's ``UnknownMethod`` only for a body of another signature), the daemon stays up, a
refused call changes no table of the database (the cache's and the full-text index's
included), and the daemon's memory does not grow with the calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dbus_fast import Variant

from roost.bridge.client import InvalidArgumentError, RoostClient
from roost.bridge.constants import CONTACTS_INTERFACE, ERROR_PREFIX, PUBSUB_INTERFACE
from tests.fixtures.dbus import Roostd, RoostdLauncher
from tests.fixtures.xmpp import XmppServer
from tests.reliability.fuzz import (
    FuzzStats,
    FuzzWorld,
    covered_members,
    interface_methods,
    mixed_calls,
    refused_calls,
    rss_kib,
    run_fuzz,
)
from tests.reliability.world import build_world

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus, pytest.mark.slow]

REFUSED_CALLS = 150
MIXED_CALLS = 300
# How much roostd's resident memory may grow over the mixed calls, after a warm-up of as
# many (caches filled, code paths loaded): a leak of a few KiB a call would pass it.
RSS_GROWTH_KIB = 16 * 1024


@pytest.fixture
def fuzzed(
    prosody_server: XmppServer, roostd_launcher: RoostdLauncher
) -> Iterator[tuple[asyncio.AbstractEventLoop, RoostClient, FuzzWorld, Roostd]]:
    """The fuzz world on a loop of the test's own (hypothesis drives a sync test)."""
    loop = asyncio.new_event_loop()
    daemon, client, world = loop.run_until_complete(build_world(prosody_server, roostd_launcher))
    yield loop, client, world, daemon
    client.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def test_every_method_is_fuzzed(
    fuzzed: tuple[asyncio.AbstractEventLoop, RoostClient, FuzzWorld, Roostd],
) -> None:
    _loop, _client, world, _daemon = fuzzed
    fuzzed_members = covered_members(world)
    missing = {
        f"{iface}.{member}({signature})"
        for (iface, member), signature in interface_methods().items()
        if (iface, member, signature) not in fuzzed_members and member != "Reset"
    }
    assert not missing, f"methods the fuzz never calls: {sorted(missing)}"


def test_random_calls_with_a_connected_profile(
    fuzzed: tuple[asyncio.AbstractEventLoop, RoostClient, FuzzWorld, Roostd],
) -> None:
    loop, client, world, daemon = fuzzed
    stats = FuzzStats()

    # Refused calls first, while nothing else writes: every table compared around each.
    run_fuzz(loop, client, world, refused_calls(world), REFUSED_CALLS, stats)
    assert stats.refused_compared == REFUSED_CALLS
    assert stats.table_changes == []
    assert {ERROR_PREFIX + "NotFound", ERROR_PREFIX + "InvalidArgument"} <= set(stats.errors)

    # Then anything: a warm-up, and as many calls again with the memory watched.
    warm = FuzzStats()
    run_fuzz(loop, client, world, mixed_calls(world), MIXED_CALLS // 2, warm)
    rss_start = rss_kib(world.pid)
    run_fuzz(loop, client, world, mixed_calls(world), MIXED_CALLS // 2, stats)
    rss_end = rss_kib(world.pid)
    assert rss_end - rss_start < RSS_GROWTH_KIB, (rss_start, rss_end)

    # The calls went past the argument checks: some reached the server and the cache.
    assert sum(stats.successes.values()) + sum(warm.successes.values()) > 0
    assert daemon.process.poll() is None
    assert "Traceback" not in daemon.log_text()
    # The world is as the fuzz found it: the profile connected, its node served.
    assert loop.run_until_complete(client.is_connected(world.profile))
    state = loop.run_until_complete(
        client.get_node_state(world.profile, world.service, world.synced_node)
    )
    assert state["state"] == "completed" and state["item_count"] == len(world.item_ids)


def test_characters_xml_forbids_are_refused_before_the_server(
    fuzzed: tuple[asyncio.AbstractEventLoop, RoostClient, FuzzWorld, Roostd],
) -> None:
    # A stanza holding one makes the server close the stream: a caller could cut the
    # profile's session with one call. Each is refused, and the session stays up.
    loop, client, world, _daemon = fuzzed
    bad = Variant("s", "a\x01b")
    target = [world.profile, world.service, world.plain_node]
    calls = [
        (
            CONTACTS_INTERFACE,
            "Add",
            "ssa{sv}",
            [world.profile, f"friend@{world.domain}", {"name": bad}],
        ),
        (
            CONTACTS_INTERFACE,
            "Add",
            "ssa{sv}",
            [world.profile, f"friend@{world.domain}", {"groups": Variant("as", ["\uffff"])}],
        ),
        (PUBSUB_INTERFACE, "SetNodeConfig", "sssa{sv}", [*target, {"pubsub#title": bad}]),
        (
            PUBSUB_INTERFACE,
            "CreateNode",
            "sssa{sv}",
            [world.profile, world.service, "fresh", {"pubsub#title": bad}],
        ),
        (PUBSUB_INTERFACE, "Subscribe", "sssa{sv}", [*target, {"x\x02": Variant("s", "1")}]),
        (PUBSUB_INTERFACE, "Unsubscribe", "sssa{sv}", [*target, {"subid": bad}]),
        (
            PUBSUB_INTERFACE,
            "Publish",
            "sssssa{sv}",
            [*target, "i1", "<n xmlns='urn:x'/>", {"pubsub#title": bad}],
        ),
    ]
    for interface, member, signature, body in calls:
        with pytest.raises(InvalidArgumentError, match="XML does not allow"):
            loop.run_until_complete(client.call(interface, member, signature, body))
        assert loop.run_until_complete(client.is_connected(world.profile)), member
