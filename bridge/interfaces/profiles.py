"""``org.roost.Backend1.Profiles``: accounts, the default profile, connections."""

from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusBool, DBusDict, DBusSignature, DBusStr
from dbus_fast.service import dbus_method, dbus_property, dbus_signal

from roost.bridge.constants import PROFILES_INTERFACE
from roost.bridge.errors import to_dbus_error
from roost.bridge.interfaces.base import DBusStrList, RoostInterface, name_args, roost_method
from roost.service.backend import Backend
from roost.service.events import DefaultProfileChanged, Event, ProfileConnected, ProfileDisconnected

_TwoStr = Annotated[tuple[str, str], DBusSignature("ss")]


def unwrap_options(options: dict[str, Variant]) -> dict[str, Any]:
    """The variants' values; the service layer checks their Python types."""
    return {key: variant.value for key, variant in options.items()}


class ProfilesInterface(RoostInterface):
    """Create, delete and list profiles; the ``Default`` property; connections."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(PROFILES_INTERFACE, backend)
        self._unsubscribe = backend.events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop relaying the backend's events as signals."""
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DefaultProfileChanged):
            self.emit_properties_changed({"Default": event.profile})
        elif isinstance(event, ProfileConnected):
            self.Connected(event.profile, event.jid)
        elif isinstance(event, ProfileDisconnected):
            self.Disconnected(event.profile, event.reason)

    @dbus_method()
    @roost_method
    async def Create(
        self, name: DBusStr, jid: DBusStr, password: DBusStr, options: DBusDict
    ) -> None:
        """Create a profile; the first one created becomes the default."""
        await self.backend.profiles.create(name, jid, password, unwrap_options(options))

    @dbus_method()
    @roost_method
    async def Delete(self, name: DBusStr) -> None:
        """Delete a profile and everything stored for it."""
        await self.backend.delete_profile(name)

    @dbus_method()
    @roost_method
    async def List(self) -> DBusStrList:
        """Every profile's name, sorted."""
        return await self.backend.profiles.list()

    @dbus_method()
    @roost_method
    async def Connect(self, name: DBusStr) -> None:
        """Open the profile's XMPP session; answer once it is up (Connected has the JID)."""
        await self.backend.connect(name)

    @dbus_method()
    @roost_method
    async def Disconnect(self, name: DBusStr) -> None:
        """Close the profile's XMPP session."""
        await self.backend.disconnect(name)

    @dbus_method()
    @roost_method
    async def IsConnected(self, name: DBusStr) -> DBusBool:
        """Whether the profile's XMPP session is up."""
        return await self.backend.is_connected(name)

    @dbus_property()
    def Default(self) -> DBusStr:
        """The default profile's name, empty when none."""
        return self.backend.profiles.default

    # dbus-fast merges getter and setter by name, as with a Python property; mypy sees
    # the redefinition only.
    @Default.setter  # type: ignore[no-redef]
    async def Default(self, value: DBusStr) -> None:
        try:
            await self.backend.profiles.set_default(value)
        except Exception as err:
            raise to_dbus_error(err, f"{self.name}.Default") from None

    @dbus_signal()
    def Connected(self, name: str, jid: str) -> _TwoStr:
        """A profile's session is up, bound to ``jid``."""
        return name, jid

    @dbus_signal()
    def Disconnected(self, name: str, reason: str) -> _TwoStr:
        """A profile's session ended; ``reason`` says why, for a person."""
        return name, reason


name_args(ProfilesInterface.List, "names")
name_args(ProfilesInterface.IsConnected, "connected")
name_args(ProfilesInterface.Connected, "name", "jid")
name_args(ProfilesInterface.Disconnected, "name", "reason")
