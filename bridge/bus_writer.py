"""Keeping a bus connection alive when its send buffer fills.

dbus-fast (5.x, as dbus-next before it) takes ``EAGAIN`` from a non-blocking ``send``
for a lost connection and closes the socket: under load (many callers, large replies)
the daemon would drop off the bus and lose its name. Reporting a full buffer as nothing
sent makes dbus-fast's writer wait until the socket is writable, as it already does
after a partial send.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)


class WaitingSocket:
    """A bus socket whose ``send``/``sendmsg`` answer 0 bytes instead of raising EAGAIN."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        """Send what fits; 0 when the buffer is full."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = ()) -> int:
        """Send with ancillary data (file descriptors); 0 when the buffer is full."""
        try:
            return self._sock.sendmsg(buffers, ancdata)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def tolerate_full_send_buffer(bus: MessageBus) -> None:
    """Make ``bus`` (connected) wait on a full send buffer instead of disconnecting."""
    writer = getattr(bus, "_writer", None)
    if writer is None or not hasattr(writer, "sock"):
        log.warning("dbus-fast's writer has changed: a full send buffer may drop the bus")
        return
    if not isinstance(writer.sock, WaitingSocket):
        writer.sock = WaitingSocket(writer.sock)
