"""D-Bus benchmark: the rate and latency of a trivial Roost call, beside a bare service.

Prints one JSON object a line (bench, metric, value, unit, and where it compares:
baseline, ratio); progress goes to stderr.

On a private dbus-daemon, two services run as subprocesses: ``roostd`` (SQLite file,
one global value stored) and a bare dbus-fast service whose ``GetValues`` answers a
constant ``a{sv}`` without any work. One client (this process) calls
``GetValues("@global@", "bench", ["k"])`` on each, with 1 and with 64 calls in flight,
for a fixed time; the bare service's rate is the baseline. The median and p95 latency
of Roost's call with one in flight are reported too. Set ``ROOST_BENCH_SMALL=1`` for a
quick run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method

from bench.figures import emit, spread, upper
from tests.fixtures.dbus import start_bus, stop_bus

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
SECONDS = 1.0 if SMALL else 4.0
# Roost\'s call rate against the bare service\'s, at least.
TARGET_RATE_RATIO = 0.6
ECHO_NAME = "org.roost.BenchEcho"
ROOST_NAME = "org.roost.Backend1"
PATH = "/org/roost/Backend1"
INTERFACE = "org.roost.Backend1.Storage"
BODY = ["@global@", "bench", ["k"]]


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[dbus] {message}", file=sys.stderr, flush=True)


class Echo(ServiceInterface):
    """The bare service: Roost's GetValues signature, a constant answer."""

    def __init__(self) -> None:
        super().__init__(INTERFACE)
        self.answer = {"k": Variant("s", "v")}

    @dbus_method()
    def GetValues(
        self, profile: DBusStr, namespace: DBusStr, keys: Annotated[list[str], DBusSignature("as")]
    ) -> DBusDict:
        """Answer the same dictionary whatever is asked."""
        return self.answer


async def serve_echo(address: str) -> None:
    """Run the bare service until SIGTERM (the ``--echo`` mode of this script)."""
    bus = await MessageBus(bus_address=address).connect()
    bus.export(PATH, Echo())
    await bus.request_name(ECHO_NAME)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    bus.disconnect()


def wait_for(address: str, name: str) -> None:
    """Block until ``name`` is owned on the bus."""
    subprocess.run(["gdbus", "wait", "--address", address, "--timeout", "30", name], check=True)


async def call_rate(
    bus: MessageBus, destination: str, in_flight: int, latencies: list[float] | None = None
) -> float:
    """Calls per second of GetValues with ``in_flight`` calls outstanding, for SECONDS."""
    message: Callable[[], Message] = lambda: Message(  # noqa: E731
        destination=destination,
        path=PATH,
        interface=INTERFACE,
        member="GetValues",
        signature="ssas",
        body=BODY,
    )
    done = 0
    deadline = time.perf_counter() + SECONDS

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reply = await bus.call(message())
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
            assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done / (time.perf_counter() - began)


async def measure(address: str) -> None:
    """Warm both services up, then measure them turn by turn."""
    bus = await MessageBus(bus_address=address).connect()
    set_value = Message(
        destination=ROOST_NAME,
        path=PATH,
        interface=INTERFACE,
        member="SetValue",
        signature="sssv",
        body=["@global@", "bench", "k", Variant("s", "v")],
    )
    reply = await bus.call(set_value)
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply.body
    for destination in (ROOST_NAME, ECHO_NAME):
        await call_rate(bus, destination, 8)  # warm-up: caches, JIT-free but page-warm
    for in_flight in (1, 64):
        progress(f"{in_flight} in flight")
        latencies: list[float] = []
        roost = await call_rate(bus, ROOST_NAME, in_flight, latencies)
        bare = await call_rate(bus, ECHO_NAME, in_flight)
        emit(
            "dbus",
            f"getvalues_calls_per_s_{in_flight}_in_flight",
            roost,
            "calls/s",
            baseline=bare,
            ratio_at_least=TARGET_RATE_RATIO,
        )
        if in_flight == 1:
            found = spread([latency * 1000 for latency in latencies])
            emit("dbus", "getvalues_latency_median", found["median"], "ms", samples=len(latencies))
            name, value = upper([latency * 1000 for latency in latencies])
            emit("dbus", f"getvalues_latency_{name}", value, "ms", samples=len(latencies))
    bus.disconnect()


def main() -> None:
    """Run the benchmark (or, with ``--echo ADDRESS``, the bare service)."""
    if sys.argv[1:2] == ["--echo"]:
        asyncio.run(serve_echo(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bus = start_bus(directory / "bus")
        address = bus.address
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(directory / "config"),
            "XDG_DATA_HOME": str(directory / "data"),
        }
        roostd = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("roostd")),
                "--bus-address",
                address,
                "--database",
                f"sqlite:///{directory / 'roost.sqlite'}",
                "--log-level",
                "warning",
            ],
            env=env,
        )
        echo = subprocess.Popen([sys.executable, __file__, "--echo", address])
        try:
            wait_for(address, ROOST_NAME)
            wait_for(address, ECHO_NAME)
            asyncio.run(measure(address))
        finally:
            for process in (roostd, echo):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            stop_bus(bus)


if __name__ == "__main__":
    main()
