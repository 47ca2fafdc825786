"""Under load the daemon stays on the bus.

Several callers with many large replies in flight fill the daemon's socket send buffer;
dbus-fast on its own would take that for a lost connection and drop the bus (and the
daemon's name) — see roost.bridge.bus_writer.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from dbus_fast import Variant

from roost.bridge.client import RoostClient
from tests.fixtures.dbus import RoostdLauncher

pytestmark = [pytest.mark.dbus, pytest.mark.slow]

# 120 calls in flight per caller: under the bus's default limit of pending replies per
# connection (128), 4 x 120 x 60 kB of replies: far more than a socket buffer holds.

CALLER = """
import asyncio, sys
from roost.bridge.client import RoostClient

async def main(address, count):
    client = await RoostClient.connect(address)
    replies = await asyncio.gather(
        *(client.get_values("@global@", "load", ["big"]) for _ in range(count)),
        return_exceptions=True,
    )
    print(sum(1 for r in replies if isinstance(r, dict) and "big" in r))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_many_large_replies_in_flight_keep_the_daemon_on_the_bus(
    roostd_launcher: RoostdLauncher,
) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    await client.set_value("@global@", "load", "big", Variant("s", "x" * 60_000))
    callers = [
        subprocess.Popen(  # noqa: ASYNC220 - the callers run beside this loop, which waits
            [sys.executable, "-c", CALLER, daemon.bus_address, "120"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answered = [int(caller.communicate(timeout=120)[0].strip() or 0) for caller in callers]
    assert answered == [120, 120, 120, 120]
    assert daemon.process.poll() is None
    assert await client.list_profiles() == []
    client.close()
