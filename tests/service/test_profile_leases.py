"""Two backends (two daemons, in process) on one database: each serves its own profiles."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.errors import Conflict, NotFound
from roost.service.events import DefaultProfileChanged, Event
from roost.service.settings import GLOBAL
from roost.storage import ItemInput, RosterEntry
from tests.fixtures.postgres import PostgresServer
from tests.storage.test_leases import EVENT_TIMEOUT, holder_cut_off

HOLDER = f"roostd pid {os.getpid()} on {socket.gethostname()}"


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[tuple[Backend, Backend]]:
    """Two backends on one database; the first created profile alice before the second
    started."""
    first = await Backend.open(Config(), database_url)
    await first.profiles.create("alice", "alice@example.org", "pw", {})
    second = await Backend.open(Config(), database_url)
    yield first, second
    await second.close()
    await first.close()


async def test_a_profile_served_elsewhere_is_refused_naming_the_server(
    pair: tuple[Backend, Backend],
) -> None:
    first, second = pair
    await first.settings.set_value("alice", "ui", "theme", "s", "dark")
    refusals = [
        second.settings.get_values("alice", "ui", []),
        second.settings.set_value("alice", "ui", "theme", "s", "light"),
        second.settings.get_param("alice", "general", "x"),
        second.contacts.list("alice"),
        second.connect("alice"),
        second.delete_profile("alice"),
    ]
    for call in refusals:
        with pytest.raises(Conflict) as refused:
            await call
        message = refused.value.message
        assert "profile 'alice' is served by another Roost daemon on this database" in message
        assert HOLDER in message
        assert message.endswith("use that daemon, or stop it first")
    # Asking is not acting: the profile is listed, and not connected here.
    assert await second.profiles.list() == ["alice"]
    assert await second.is_connected("alice") is False
    assert await first.settings.get_values("alice", "ui", []) == {"theme": ("s", "dark")}


async def test_each_daemon_serves_the_profiles_it_created(pair: tuple[Backend, Backend]) -> None:
    first, second = pair
    await second.profiles.create("bob", "bob@example.org", "pw", {})
    await second.settings.set_value("bob", "ui", "theme", "s", "light")
    with pytest.raises(Conflict, match="'bob'"):
        await first.settings.get_values("bob", "ui", [])
    with pytest.raises(Conflict, match="'alice'"):
        await second.settings.get_values("alice", "ui", [])
    assert first.profiles.leased == {"alice"}
    assert second.profiles.leased == {"bob"}
    # Deleting gives the lease back with the profile.
    await second.delete_profile("bob")
    assert second.profiles.leased == frozenset()


async def test_a_stopped_daemons_profiles_are_taken_over_read_afresh(database_url: str) -> None:
    first = await Backend.open(Config(), database_url)
    await first.profiles.create("alice", "alice@example.org", "pw", {})
    second = await Backend.open(Config(), database_url)
    try:
        # Written by the serving daemon after the second read every roster at its start.
        await first.db.roster.replace_roster(
            "alice", "v2", [RosterEntry("juliet@example.org", "Juliet", ("Friends",), "both")]
        )
        await first.settings.set_value("alice", "ui", "theme", "s", "dark")
        await first.close()
        assert await second.settings.get_values("alice", "ui", []) == {"theme": ("s", "dark")}
        contacts = await second.contacts.list("alice")
        assert [(c["jid"], c["subscription"]) for c in contacts] == [("juliet@example.org", "both")]
        assert second.profiles.leased == {"alice"}
    finally:
        await second.close()


@pytest.mark.postgresql
async def test_what_no_profile_owns_is_read_again_on_a_shared_database(
    postgresql_url: str,
) -> None:
    first = await Backend.open(Config(), postgresql_url)
    second = await Backend.open(Config(), postgresql_url)
    try:
        assert second.db.shares_database
        events: list[Event] = []
        second.events.subscribe(events.append)
        # Global values: each daemon sees the other's writes.
        await second.settings.get_values(GLOBAL, "site", [])
        await first.settings.set_value(GLOBAL, "site", "motd", "s", "hello")
        assert await second.settings.get_values(GLOBAL, "site", []) == {"motd": ("s", "hello")}
        await second.settings.set_value(GLOBAL, "site", "motd", "s", "bye")
        assert await first.settings.get_values(GLOBAL, "site", ["motd"]) == {"motd": ("s", "bye")}
        # A profile the other daemon created is found, not NotFound.
        assert second.profiles.default == ""
        await first.profiles.create("alice", "alice@example.org", "pw", {})
        assert await second.profiles.find("alice") == "alice"
        # The default it set is the default here too.
        with pytest.raises(Conflict, match="'alice'"):
            await second.settings.get_values("", "ui", [])
        assert second.profiles.default == "alice"
        assert DefaultProfileChanged("alice") in events
        await first.delete_profile("alice")
        with pytest.raises(NotFound):
            await second.settings.get_values("", "ui", [])
        with pytest.raises(NotFound):
            await second.settings.get_values("alice", "ui", [])
    finally:
        await second.close()
        await first.close()


async def _cached_item(backend: Backend, profile: str) -> None:
    node = await backend.db.nodes.get_or_create_node(profile, "pubsub.example.org", "blog")
    xml = "<item xmlns='http://jabber.org/protocol/pubsub' id='a'/>"
    await backend.db.items.upsert_items(node.id, [ItemInput("a", "", xml, None, "")])


@pytest.mark.postgresql
async def test_purge_and_reset_leave_other_daemons_caches_alone(postgresql_url: str) -> None:
    first = await Backend.open(Config(), postgresql_url)
    second = await Backend.open(Config(), postgresql_url)
    try:
        await first.profiles.create("alice", "alice@example.org", "pw", {})
        await second.profiles.create("bob", "bob@example.org", "pw", {})
        await _cached_item(first, "alice")
        await _cached_item(second, "bob")
        with pytest.raises(Conflict, match="Reset would empty the cache of every Roost daemon"):
            await second.pubsub.reset_cache()
        with pytest.raises(Conflict, match="'alice'"):
            await second.pubsub.purge_cache({"profiles": ["alice"]})
        # Without a profiles filter, only this daemon's profiles are purged.
        assert await second.pubsub.purge_cache({}) == 1
        assert await first.pubsub.purge_cache({"profiles": ["alice"]}) == 1
    finally:
        await second.close()
        await first.close()


@pytest.mark.postgresql
async def test_a_lease_lost_to_another_daemon_is_served_there_only(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    first = await Backend.open(Config(), postgresql_url)
    second = await Backend.open(Config(), postgresql_url)
    try:
        await first.profiles.create("alice", "alice@example.org", "pw", {})
        await first.settings.set_value("alice", "ui", "theme", "s", "dark")
        lost = asyncio.Event()
        first.profiles.on_lease_lost.append(lambda _name: lost.set())
        alice = await first.db.profiles.get_profile("alice")
        # The second's lease connection is up before no new one may start.
        await second.profiles.create("bob", "bob@example.org", "pw", {})
        # The first's lease connection drops, and the second asks for alice before the
        # first is back: the second serves her from now on.
        async with holder_cut_off(postgres_server, postgresql_url, alice.id):
            await second.settings.set_value("alice", "ui", "theme", "s", "light")
        await asyncio.wait_for(lost.wait(), EVENT_TIMEOUT)
        assert first.profiles.leased == frozenset()
        with pytest.raises(Conflict, match="is served by another Roost daemon"):
            await first.settings.get_values("alice", "ui", [])
        assert await second.settings.get_values("alice", "ui", []) == {"theme": ("s", "light")}
    finally:
        await second.close()
        await first.close()
