"""The Contacts interface through the bus, without an XMPP server.

Argument checks, unknown and offline profiles go to ``roostd`` running as a process (one
daemon for the module, each test with profiles of its own). The records' D-Bus types and
the signals go through the interface exported in-process on a bus of the test's own,
over a stand-in for the service layer, since only a server could make real ones.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from roost.bridge.client import (
    InvalidArgumentError,
    NotConnectedError,
    NotFoundError,
    RoostClient,
)
from roost.bridge.constants import CONTACTS_INTERFACE, OBJECT_PATH
from roost.bridge.interfaces.contacts import ContactsInterface
from roost.service.errors import NotFound
from roost.service.events import ContactChanged, EventHub, SubscriptionRequested
from tests.fixtures.dbus import PrivateBus, RoostdLauncher

pytestmark = pytest.mark.dbus

INVALID = "org.roost.Backend1.Error.InvalidArgument"
FRIEND = "friend@example.org"
# Profiles point at a closed loopback port: nothing is ever looked up or reached.
OFFLINE = {"host": "127.0.0.1", "port": 1, "tls": "none"}

_names = itertools.count()


async def offline_profile(client: RoostClient) -> str:
    """A new profile of this module's daemon, never connected."""
    name = f"contacts{next(_names)}"
    await client.create_profile(name, f"{name}@example.org", "pw", OFFLINE)
    return name


async def add_raw(client: RoostClient, profile: str, jid: str, options: dict[str, Variant]) -> None:
    """``Add`` with options exactly as given (the client's own method types them)."""
    await client.call(CONTACTS_INTERFACE, "Add", "ssa{sv}", [profile, jid, options])


# -- against roostd ---------------------------------------------------------------------


async def test_a_profile_never_connected_has_no_contacts_and_no_requests(
    roost_client: RoostClient,
) -> None:
    profile = await offline_profile(roost_client)
    assert await roost_client.list_contacts(profile) == []
    assert await roost_client.list_subscription_requests(profile) == []
    body = await roost_client.call(CONTACTS_INTERFACE, "List", "s", [profile])
    assert body == [[]]


async def test_an_unknown_profile_is_not_found(roost_client: RoostClient) -> None:
    for call in (
        roost_client.list_contacts("nobody-here"),
        roost_client.list_subscription_requests("nobody-here"),
        roost_client.add_contact("nobody-here", FRIEND),
        roost_client.remove_contact("nobody-here", FRIEND),
        roost_client.authorize("nobody-here", FRIEND, True),
    ):
        with pytest.raises(NotFoundError, match="no profile named 'nobody-here'"):
            await call


@pytest.mark.parametrize(
    "jid",
    ["not a jid@@", f"{FRIEND}/phone", "", "@example.org", "a@b@c"],
)
async def test_a_bad_jid_is_refused_by_every_member_that_takes_one(
    roost_client: RoostClient, jid: str
) -> None:
    profile = await offline_profile(roost_client)
    for call in (
        roost_client.add_contact(profile, jid),
        roost_client.remove_contact(profile, jid),
        roost_client.authorize(profile, jid, True),
        roost_client.authorize(profile, jid, False),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            await call
        assert caught.value.name == INVALID
        assert caught.value.message
    assert await roost_client.list_contacts(profile) == []


async def test_a_full_jid_is_refused_with_why(roost_client: RoostClient) -> None:
    profile = await offline_profile(roost_client)
    with pytest.raises(InvalidArgumentError, match="full JID"):
        await roost_client.add_contact(profile, f"{FRIEND}/phone")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"colour": Variant("s", "red")}, "unknown Add option"),
        ({"nickname": Variant("s", "F")}, "unknown Add option"),
        ({"name": Variant("i", 5)}, "name option"),
        ({"name": Variant("as", ["F"])}, "name option"),
        ({"name": Variant("s", "x" * 1024)}, "name option"),
        ({"groups": Variant("s", "Work")}, "groups option"),
        ({"groups": Variant("ai", [1, 2])}, "groups option"),
        ({"groups": Variant("a{sv}", {"Work": Variant("b", True)})}, "groups option"),
        ({"groups": Variant("as", [""])}, "group name"),
        ({"groups": Variant("as", [f"g{n}" for n in range(101)])}, "groups"),
        ({"subscribe": Variant("s", "yes")}, "subscribe option"),
        ({"subscribe": Variant("i", 1)}, "subscribe option"),
        ({"subscribe": Variant("u", 0)}, "subscribe option"),
    ],
)
async def test_add_refuses_bad_options(
    roost_client: RoostClient, options: dict[str, Variant], says: str
) -> None:
    profile = await offline_profile(roost_client)
    with pytest.raises(InvalidArgumentError, match=says) as caught:
        await add_raw(roost_client, profile, FRIEND, options)
    assert caught.value.name == INVALID


async def test_changes_need_a_connection(roost_client: RoostClient) -> None:
    profile = await offline_profile(roost_client)
    for call in (
        roost_client.add_contact(profile, FRIEND),
        roost_client.add_contact(profile, FRIEND, name="F", groups=["Pals"], subscribe=False),
        roost_client.remove_contact(profile, FRIEND),
        roost_client.authorize(profile, FRIEND, True),
        roost_client.authorize(profile, FRIEND, False),
    ):
        with pytest.raises(NotConnectedError, match="is not connected"):
            await call
    # Well-typed options of every kind pass the checks and meet the same answer.
    with pytest.raises(NotConnectedError):
        await add_raw(
            roost_client,
            profile,
            FRIEND,
            {
                "name": Variant("s", "Friend"),
                "groups": Variant("as", ["Work", "Pals"]),
                "subscribe": Variant("b", False),
            },
        )
    assert await roost_client.list_contacts(profile) == []


async def test_the_empty_profile_is_the_default_one(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    try:
        with pytest.raises(NotFoundError):
            await client.list_contacts("")
        with pytest.raises(NotFoundError):
            await client.add_contact("", FRIEND)
        await client.create_profile("first", "first@example.org", "pw", OFFLINE)
        assert await client.list_contacts("") == []
        assert await client.list_subscription_requests("") == []
        with pytest.raises(NotConnectedError, match="'first'"):
            await client.add_contact("", FRIEND)
    finally:
        client.close()


# -- the interface in-process -----------------------------------------------------------

CONTACT = {
    "jid": FRIEND,
    "name": "Friend",
    "groups": ["Family", "Pals"],
    "subscription": "both",
    "pending_out": False,
    "pending_in": True,
}
REQUEST = {"jid": "stranger@example.org", "message": "Hi, it's me", "received": 1795169400}


class StubContacts:
    """What the interface asks of ``backend.contacts``; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def list(self, profile: str) -> list[dict[str, Any]]:
        self.calls.append(("list", profile))
        return [dict(CONTACT), {**CONTACT, "jid": "lone@example.org", "groups": []}]

    async def list_requests(self, profile: str) -> builtins.list[dict[str, Any]]:
        self.calls.append(("list_requests", profile))
        return [dict(REQUEST)]

    async def add(self, profile: str, jid: str, options: Mapping[str, Any]) -> None:
        self.calls.append(("add", profile, jid, dict(options)))

    async def remove(self, profile: str, jid: str) -> None:
        self.calls.append(("remove", profile, jid))
        raise NotFound(f"{jid} is not in the roster of {profile!r}; List() gives it")

    async def authorize(self, profile: str, jid: str, accept: bool) -> None:
        self.calls.append(("authorize", profile, jid, accept))


class StubBackend:
    def __init__(self) -> None:
        self.events = EventHub()
        self.contacts = StubContacts()


@pytest.fixture
async def served(
    test_bus: PrivateBus,
) -> AsyncIterator[tuple[StubBackend, RoostClient]]:
    """The interface over a stub backend on the test's bus, and a client of it."""
    backend = StubBackend()
    interface = ContactsInterface(backend)  # type: ignore[arg-type]
    server = await MessageBus(bus_address=test_bus.address).connect()
    server.export(OBJECT_PATH, interface)
    assert server.unique_name is not None
    client = await RoostClient.connect(test_bus.address, destination=server.unique_name)
    yield backend, client
    client.close()
    interface.close()
    server.disconnect()


async def test_records_carry_their_documented_types(
    served: tuple[StubBackend, RoostClient],
) -> None:
    backend, client = served
    contacts = (await client.call(CONTACTS_INTERFACE, "List", "s", ["work"]))[0]
    assert {key: value.signature for key, value in contacts[0].items()} == {
        "jid": "s",
        "name": "s",
        "groups": "as",
        "subscription": "s",
        "pending_out": "b",
        "pending_in": "b",
    }
    assert contacts[1]["groups"] == Variant("as", [])
    requests = (await client.call(CONTACTS_INTERFACE, "ListRequests", "s", ["work"]))[0]
    assert {key: value.signature for key, value in requests[0].items()} == {
        "jid": "s",
        "message": "s",
        "received": "d",
    }
    # The client hands back plain Python values.
    listed = await client.list_contacts("work")
    assert listed[0] == CONTACT
    assert listed[1]["groups"] == []
    assert await client.list_subscription_requests("work") == [
        {**REQUEST, "received": 1795169400.0}
    ]
    assert backend.contacts.calls == [("list", "work"), ("list_requests", "work")] * 2


async def test_arguments_reach_the_service_as_plain_values(
    served: tuple[StubBackend, RoostClient],
) -> None:
    backend, client = served
    await client.add_contact("", FRIEND, name="F", groups=("Pals", "Work"), subscribe=False)
    await client.add_contact("work", FRIEND)
    await client.authorize("work", "stranger@example.org", False)
    with pytest.raises(NotFoundError, match="not in the roster"):
        await client.remove_contact("work", FRIEND)
    assert backend.contacts.calls == [
        ("add", "", FRIEND, {"name": "F", "groups": ["Pals", "Work"], "subscribe": False}),
        ("add", "work", FRIEND, {"subscribe": True}),
        ("authorize", "work", "stranger@example.org", False),
        ("remove", "work", FRIEND),
    ]


async def test_service_events_become_signals(served: tuple[StubBackend, RoostClient]) -> None:
    backend, client = served
    changed: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    requested: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    raw: asyncio.Queue[dict[str, Variant]] = asyncio.Queue()
    stops = [
        await client.on_contact_changed(lambda p, c: changed.put_nowait((p, c))),
        await client.on_subscription_request(lambda p, j: requested.put_nowait((p, j))),
        await client.subscribe(
            CONTACTS_INTERFACE, "ContactChanged", lambda _p, c: raw.put_nowait(c)
        ),
    ]
    try:
        backend.events.publish(ContactChanged("work", {**CONTACT, "removed": False}))
        backend.events.publish(SubscriptionRequested("work", "stranger@example.org", "Hi"))
        gone = {**CONTACT, "subscription": "none", "pending_in": False, "removed": True}
        backend.events.publish(ContactChanged("home", gone))
        assert await asyncio.wait_for(changed.get(), 5) == ("work", {**CONTACT, "removed": False})
        assert await asyncio.wait_for(requested.get(), 5) == ("work", "stranger@example.org")
        assert await asyncio.wait_for(changed.get(), 5) == ("home", gone)
        first = await asyncio.wait_for(raw.get(), 5)
        assert first["groups"].signature == "as"
        assert first["removed"] == Variant("b", False)
        assert first["pending_in"] == Variant("b", True)
    finally:
        for stop in stops:
            stop()
