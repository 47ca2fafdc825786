"""Create calls racing on an empty database: the first profile becomes the default, and
every call that raced it succeeds too (one of them is the default), on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from roost.bridge.client import RoostClient
from tests.fixtures.dbus import RoostdLauncher

pytestmark = pytest.mark.dbus

RACERS = 12
# Twelve creates take well under a second on an idle machine; this holds on a loaded one.
CALL_TIMEOUT = 60.0


async def test_racing_first_creates_all_succeed_and_one_is_the_default(
    roostd_launcher: RoostdLauncher, database_url: str
) -> None:
    # The last --database wins: the launcher names a file of the daemon's own first.
    daemon = roostd_launcher.start("--database", database_url)
    names = [f"racer{n}" for n in range(RACERS)]
    clients = [await RoostClient.connect(daemon.bus_address) for _ in names]
    try:
        # One connection a caller, so that the calls reach the daemon together.
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.create_profile(name, f"{name}@example.org", "secret")
                    for client, name in zip(clients, names, strict=True)
                ),
                return_exceptions=True,
            ),
            CALL_TIMEOUT,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert failures == []
        assert await clients[0].list_profiles() == sorted(names)
        default = await clients[0].get_default_profile()
        assert default in names
    finally:
        for client in clients:
            client.close()
    assert daemon.terminate() == 0
    # The default is the one the daemon announced, and it stays after a restart.
    again = roostd_launcher.start("--database", database_url)
    client = await RoostClient.connect(again.bus_address)
    try:
        assert await client.get_default_profile() == default
    finally:
        client.close()
    assert "Internal" not in daemon.log_text()
