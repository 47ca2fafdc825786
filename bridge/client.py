"""A typed async client of the Roost daemon, for frontends and tests.

Each method mirrors one D-Bus member and returns Python values; an error reply raises
the :class:`RoostDBusError` subclass of its name (``NotFoundError`` for
``org.roost.Backend1.Error.NotFound``…), with the daemon's message::

    client = await RoostClient.connect()
    await client.create_profile("work", "me@example.org", "secret", {"port": 5222})
    print(await client.list_profiles())
    client.on_param_changed(lambda profile, category, name, value: print(name, value))
    await client.add_contact("work", "friend@example.org", name="Friend", groups=["Pals"])
    print(await client.list_contacts("work"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from roost.bridge.bus_writer import tolerate_full_send_buffer
from roost.bridge.constants import (
    BUS_NAME,
    CONTACTS_INTERFACE,
    DAEMON_INTERFACE,
    ERROR_PREFIX,
    ERROR_XMPP_PREFIX,
    OBJECT_PATH,
    PROFILES_INTERFACE,
    PROPERTIES_INTERFACE,
    STORAGE_INTERFACE,
)
from roost.bridge.pubsub_client import PubsubCalls
from roost.bridge.variants import plain


class RoostDBusError(Exception):
    """An error reply from the daemon (or the bus): ``name`` and ``message``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class InvalidArgumentError(RoostDBusError, ValueError):
    """``Error.InvalidArgument``: an argument is malformed or out of range."""


class NotFoundError(RoostDBusError, LookupError):
    """``Error.NotFound``: the named profile, param, key or node does not exist."""


class NotConnectedError(RoostDBusError):
    """``Error.NotConnected``: the profile has no XMPP session up."""


class ConflictError(RoostDBusError):
    """``Error.Conflict``: the thing exists already, or the state forbids the change."""


class ForbiddenError(RoostDBusError, PermissionError):
    """``Error.Forbidden``: refused locally."""


class InternalError(RoostDBusError):
    """``Error.Internal``: a failure inside the daemon (its log has the details)."""


class XmppError(RoostDBusError):
    """``Error.Xmpp.<Condition>``: the XMPP server answered with an error."""


ERROR_CLASSES: dict[str, type[RoostDBusError]] = {
    ERROR_PREFIX + "InvalidArgument": InvalidArgumentError,
    ERROR_PREFIX + "NotFound": NotFoundError,
    ERROR_PREFIX + "NotConnected": NotConnectedError,
    ERROR_PREFIX + "Conflict": ConflictError,
    ERROR_PREFIX + "Forbidden": ForbiddenError,
    ERROR_PREFIX + "Internal": InternalError,
}


def error_from_reply(name: str, message: str) -> RoostDBusError:
    """The exception for an error reply named ``name``."""
    if name.startswith(ERROR_XMPP_PREFIX):
        return XmppError(name, message)
    return ERROR_CLASSES.get(name, RoostDBusError)(name, message)


_OPTION_SIGNATURES = {
    "host": "s",
    "port": "u",
    "tls": "s",
    "autoconnect": "b",
    "verify_certificate": "b",
    "ca_file": "s",
}


def profile_options(options: Mapping[str, Any]) -> dict[str, Variant]:
    """Wrap profile options in variants of their documented types."""
    return {
        key: value if isinstance(value, Variant) else Variant(_OPTION_SIGNATURES[key], value)
        for key, value in options.items()
    }


class RoostClient(PubsubCalls):
    """A connection to the daemon's object; create it with :meth:`connect`."""

    def __init__(self, bus: MessageBus, destination: str = BUS_NAME) -> None:
        self.bus = bus
        self.destination = destination
        self._handlers: list[Callable[[Message], None]] = []

    @classmethod
    async def connect(
        cls, bus_address: str | None = None, destination: str = BUS_NAME
    ) -> RoostClient:
        """Connect to the bus at ``bus_address`` (default: the session bus)."""
        bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
        tolerate_full_send_buffer(bus)
        return cls(bus, destination)

    def close(self) -> None:
        """Disconnect from the bus."""
        self.bus.disconnect()

    async def call(
        self, interface: str, member: str, signature: str = "", body: Sequence[Any] = ()
    ) -> list[Any]:
        """Call a member; return the reply's body, or raise its :class:`RoostDBusError`."""
        reply = await self.bus.call(
            Message(
                destination=self.destination,
                path=OBJECT_PATH,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise error_from_reply(reply.error_name or "", text)
        return list(reply.body)

    # org.roost.Backend1

    async def version(self) -> str:
        """The daemon's ``Version``."""
        return str(await self.get_property(DAEMON_INTERFACE, "Version"))

    async def get_property(self, interface: str, name: str) -> Any:
        """A property's value (unwrapped from its variant)."""
        body = await self.call(PROPERTIES_INTERFACE, "Get", "ss", [interface, name])
        return body[0].value

    async def set_property(self, interface: str, name: str, value: Variant) -> None:
        """Set a property."""
        await self.call(PROPERTIES_INTERFACE, "Set", "ssv", [interface, name, value])

    # org.roost.Backend1.Profiles

    async def create_profile(
        self, name: str, jid: str, password: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """``Create``; plain option values are wrapped in their documented types."""
        body = [name, jid, password, profile_options(options or {})]
        await self.call(PROFILES_INTERFACE, "Create", "sssa{sv}", body)

    async def delete_profile(self, name: str) -> None:
        """``Delete``."""
        await self.call(PROFILES_INTERFACE, "Delete", "s", [name])

    async def list_profiles(self) -> list[str]:
        """``List``."""
        return list((await self.call(PROFILES_INTERFACE, "List"))[0])

    async def get_default_profile(self) -> str:
        """The ``Default`` property."""
        return str(await self.get_property(PROFILES_INTERFACE, "Default"))

    async def set_default_profile(self, name: str) -> None:
        """Set the ``Default`` property (empty: no default)."""
        await self.set_property(PROFILES_INTERFACE, "Default", Variant("s", name))

    async def connect_profile(self, name: str) -> None:
        """``Connect``: returns once the session is up."""
        await self.call(PROFILES_INTERFACE, "Connect", "s", [name])

    async def disconnect_profile(self, name: str) -> None:
        """``Disconnect``."""
        await self.call(PROFILES_INTERFACE, "Disconnect", "s", [name])

    async def is_connected(self, name: str) -> bool:
        """``IsConnected``."""
        return bool((await self.call(PROFILES_INTERFACE, "IsConnected", "s", [name]))[0])

    # org.roost.Backend1.Storage

    async def get_param(self, profile: str, category: str, name: str) -> str:
        """``GetParam``."""
        body = await self.call(STORAGE_INTERFACE, "GetParam", "sss", [profile, category, name])
        return str(body[0])

    async def set_param(self, profile: str, category: str, name: str, value: str) -> None:
        """``SetParam``."""
        body = [profile, category, name, value]
        await self.call(STORAGE_INTERFACE, "SetParam", "ssss", body)

    async def list_params(self, profile: str, category: str) -> dict[str, str]:
        """``ListParams``."""
        return dict(
            (await self.call(STORAGE_INTERFACE, "ListParams", "ss", [profile, category]))[0]
        )

    async def get_values(
        self, profile: str, namespace: str, keys: Sequence[str] = ()
    ) -> dict[str, Variant]:
        """``GetValues``: each value as a :class:`Variant`, which keeps its type."""
        body = await self.call(
            STORAGE_INTERFACE, "GetValues", "ssas", [profile, namespace, list(keys)]
        )
        return dict(body[0])

    async def set_value(self, profile: str, namespace: str, key: str, value: Variant) -> None:
        """``SetValue``."""
        await self.call(STORAGE_INTERFACE, "SetValue", "sssv", [profile, namespace, key, value])

    async def delete_value(self, profile: str, namespace: str, key: str) -> None:
        """``DeleteValue``."""
        await self.call(STORAGE_INTERFACE, "DeleteValue", "sss", [profile, namespace, key])

    async def copy_database(self, url: str, *, replace: bool = False) -> list[dict[str, Any]]:
        """``CopyDatabase``: copy the daemon's whole database to ``url`` and check it; each
        table as a plain dictionary (``table``, ``rows``, ``checksum``, ``seconds``)."""
        options = {"replace": Variant("b", replace)}
        body = await self.call(STORAGE_INTERFACE, "CopyDatabase", "sa{sv}", [url, options])
        return list(plain(body[0]))

    # org.roost.Backend1.Contacts

    async def list_contacts(self, profile: str = "") -> list[dict[str, Any]]:
        """``List``: each contact as a plain dictionary (``jid``, ``name``, ``groups``,
        ``subscription``, ``pending_out``, ``pending_in``)."""
        return list(plain((await self.call(CONTACTS_INTERFACE, "List", "s", [profile]))[0]))

    async def list_subscription_requests(self, profile: str = "") -> list[dict[str, Any]]:
        """``ListRequests``: the requests waiting for an answer (``jid``, ``message``,
        ``received``), oldest first."""
        body = await self.call(CONTACTS_INTERFACE, "ListRequests", "s", [profile])
        return list(plain(body[0]))

    async def add_contact(
        self,
        profile: str,
        jid: str,
        *,
        name: str | None = None,
        groups: Sequence[str] | None = None,
        subscribe: bool = True,
    ) -> None:
        """``Add``: add ``jid`` (or change its name and groups); unless ``subscribe`` is
        false, also ask for its presence."""
        options: dict[str, Variant] = {"subscribe": Variant("b", subscribe)}
        if name is not None:
            options["name"] = Variant("s", name)
        if groups is not None:
            options["groups"] = Variant("as", list(groups))
        await self.call(CONTACTS_INTERFACE, "Add", "ssa{sv}", [profile, jid, options])

    async def remove_contact(self, profile: str, jid: str) -> None:
        """``Remove``."""
        await self.call(CONTACTS_INTERFACE, "Remove", "ss", [profile, jid])

    async def authorize(self, profile: str, jid: str, accept: bool) -> None:
        """``Authorize``: approve (``accept``) or refuse ``jid``'s subscription request."""
        await self.call(CONTACTS_INTERFACE, "Authorize", "ssb", [profile, jid, accept])

    # Signals

    async def subscribe(
        self, interface: str, member: str, callback: Callable[..., None]
    ) -> Callable[[], None]:
        """Call ``callback(*args)`` on each ``interface.member`` signal from the daemon.

        Returns a function that stops the subscription.
        """
        rule = f"type='signal',interface='{interface}',member='{member}',path='{OBJECT_PATH}'"
        await self._bus_call("AddMatch", rule)

        def handler(msg: Message) -> None:
            if (
                msg.message_type == MessageType.SIGNAL
                and msg.interface == interface
                and msg.member == member
                and msg.path == OBJECT_PATH
            ):
                callback(*msg.body)

        self.bus.add_message_handler(handler)

        def unsubscribe() -> None:
            self.bus.remove_message_handler(handler)

        return unsubscribe

    async def _bus_call(self, member: str, rule: str) -> None:
        reply = await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member=member,
                signature="s",
                body=[rule],
            )
        )
        if reply is not None and reply.message_type == MessageType.ERROR:
            raise error_from_reply(reply.error_name or "", str(reply.body[0]))

    async def on_param_changed(
        self, callback: Callable[[str, str, str, str], None]
    ) -> Callable[[], None]:
        """``ParamChanged(profile, category, name, value)``."""
        return await self.subscribe(STORAGE_INTERFACE, "ParamChanged", callback)

    async def on_connected(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """``Connected(name, jid)``."""
        return await self.subscribe(PROFILES_INTERFACE, "Connected", callback)

    async def on_disconnected(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """``Disconnected(name, reason)``."""
        return await self.subscribe(PROFILES_INTERFACE, "Disconnected", callback)

    async def on_contact_changed(
        self, callback: Callable[[str, dict[str, Any]], None]
    ) -> Callable[[], None]:
        """``ContactChanged(profile, contact)``, the contact as a plain dictionary (with
        ``removed``)."""

        def relay(profile: str, contact: dict[str, Variant]) -> None:
            callback(profile, plain(contact))

        return await self.subscribe(CONTACTS_INTERFACE, "ContactChanged", relay)

    async def on_subscription_request(
        self, callback: Callable[[str, str], None]
    ) -> Callable[[], None]:
        """``SubscriptionRequest(profile, jid)``."""
        return await self.subscribe(CONTACTS_INTERFACE, "SubscriptionRequest", callback)

    async def on_default_changed(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """The ``Default`` property changed (PropertiesChanged on Profiles)."""

        def relay(interface: str, changed: dict[str, Variant], _invalidated: list[str]) -> None:
            if interface == PROFILES_INTERFACE and "Default" in changed:
                callback(changed["Default"].value)

        return await self.subscribe(PROPERTIES_INTERFACE, "PropertiesChanged", relay)
