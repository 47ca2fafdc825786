"""The D-Bus bridge: exports Roost's interfaces on the bus and owns ``org.roost.Backend1``.

Loaded by ``roostd`` from the ``roost.bridges`` entry-point group. The object is exported
before the name is requested, so that a caller that sees the name (or a bus activation
that waits for it) always finds every interface in place.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from dbus_fast import BusType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from roost.bridge.bus_writer import tolerate_full_send_buffer
from roost.bridge.constants import BUS_NAME, OBJECT_PATH
from roost.bridge.interfaces.base import RoostInterface
from roost.bridge.interfaces.cache import CacheInterface
from roost.bridge.interfaces.contacts import ContactsInterface
from roost.bridge.interfaces.daemon import DaemonInterface
from roost.bridge.interfaces.profiles import ProfilesInterface
from roost.bridge.interfaces.pubsub import PubsubInterface
from roost.bridge.interfaces.storage import StorageInterface
from roost.service.backend import Backend
from roost.service.daemon import StartupError

log = logging.getLogger(__name__)

INTERFACES: list[Callable[[Backend], RoostInterface]] = [
    DaemonInterface,
    ProfilesInterface,
    StorageInterface,
    PubsubInterface,
    CacheInterface,
    ContactsInterface,
]
"""Every interface exported on :data:`OBJECT_PATH`, each built from the Backend."""

DRAIN_TIMEOUT = 10.0


def disconnected(bus: MessageBus) -> Awaitable[None]:
    """What ``bus.wait_for_disconnect()`` returns (dbus-fast leaves it unannotated)."""
    wait = cast(Callable[[], Awaitable[None]], bus.wait_for_disconnect)
    return wait()


class DBusBridge:
    """Serves the Backend on a D-Bus bus (the session bus unless ``--bus-address``)."""

    def __init__(self, backend: Backend, options: argparse.Namespace) -> None:
        self.backend = backend
        self.bus_address: str | None = getattr(options, "bus_address", None)
        self.bus: MessageBus | None = None
        self.interfaces: list[RoostInterface] = []
        self._stopping = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """``--bus-address``: the bus to serve on (default: the session bus)."""
        parser.add_argument(
            "--bus-address",
            metavar="ADDR",
            help="D-Bus address to serve on (default: the session bus)",
        )

    async def start(self) -> None:
        """Connect, export every interface, then request the bus name."""
        where = self.bus_address or "the session bus"
        try:
            bus = MessageBus(bus_address=self.bus_address, bus_type=BusType.SESSION)
            self.bus = await bus.connect()
            tolerate_full_send_buffer(self.bus)
        except Exception as err:
            raise StartupError(f"cannot connect to {where}: {err}") from None
        self.interfaces = [make(self.backend) for make in INTERFACES]
        for interface in self.interfaces:
            self.bus.export(OBJECT_PATH, interface)
        reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            self._close_interfaces()
            self.bus.disconnect()
            raise StartupError(f"the name {BUS_NAME} is already owned on {where}")
        log.info("serving %s on %s", BUS_NAME, where)

    async def wait_closed(self) -> str:
        """Return a reason when the bus connection ends while still serving."""
        assert self.bus is not None
        try:
            # Shielded: cancelling this wait (on a signal) must not cancel the bus's own
            # disconnect future, which stop() awaits afterwards.
            await asyncio.shield(disconnected(self.bus))
        except Exception as err:
            return f"lost the bus connection: {err}"
        return "lost the bus connection"

    async def stop(self) -> None:
        """Release the name, let calls in flight answer, then disconnect."""
        if self.bus is None or self._stopping:
            return
        self._stopping = True
        bus = self.bus
        self._close_interfaces()
        if bus.connected:
            try:
                await asyncio.wait_for(bus.release_name(BUS_NAME), 2.0)
            except Exception:
                log.warning("could not release %s before disconnecting", BUS_NAME)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(interface.drain() for interface in self.interfaces)),
                DRAIN_TIMEOUT,
            )
        except TimeoutError:
            log.warning("calls still running after %.0f s; stopping anyway", DRAIN_TIMEOUT)
        for interface in self.interfaces:
            bus.unexport(OBJECT_PATH, interface)
        bus.disconnect()
        try:
            await disconnected(bus)
        except Exception:
            log.debug("bus connection ended with an error", exc_info=True)

    def _close_interfaces(self) -> None:
        for interface in self.interfaces:
            interface.close()
