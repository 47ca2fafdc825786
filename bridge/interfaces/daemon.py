"""``org.roost.Backend1``: the daemon itself."""

from dbus_fast.annotations import DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_property

from roost.bridge.constants import DAEMON_INTERFACE
from roost.bridge.interfaces.base import RoostInterface
from roost.service.backend import Backend


class DaemonInterface(RoostInterface):
    """The daemon's own interface: its version, for frontends to check compatibility."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(DAEMON_INTERFACE, backend)

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        """Roost's version (PEP 440, such as ``0.1.0``)."""
        return self.backend.version
