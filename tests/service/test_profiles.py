"""ProfileService and the Backend's session methods, in process, on a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.errors import Conflict, ConnectionFailed, InvalidArgument, NotFound
from roost.service.events import DefaultProfileChanged, Event
from roost.service.profiles import check_bare_jid, check_options, check_profile_name


@pytest.fixture
async def backend(sqlite_url: str) -> AsyncIterator[Backend]:
    backend = await Backend.open(Config(), sqlite_url)
    yield backend
    await backend.close()


def test_names() -> None:
    for good in ("a", "work", "Work.2_x-y", "9" * 64):
        assert check_profile_name(good) == good
    for bad in ("", "-a", ".a", "a b", "é", "x" * 65, "a/b", "@global@"):
        with pytest.raises(InvalidArgument):
            check_profile_name(bad)


def test_jids_are_bare_and_normalised() -> None:
    assert check_bare_jid("Me@Example.ORG") == "me@example.org"
    for bad in ("", "example.org", "me@example.org/res", "me@", "@x", "a" * 3072 + "@x.org"):
        with pytest.raises(InvalidArgument):
            check_bare_jid(bad)


def test_options() -> None:
    good = {"host": "xmpp.example.org", "port": 5222, "tls": "starttls", "autoconnect": True}
    assert check_options(good) == good
    for bad in (
        {"port": True},
        {"port": 65536},
        {"host": ""},
        {"host": "a b"},
        {"tls": "yes"},
        {"autoconnect": "yes"},
        {"resource": "x"},
    ):
        with pytest.raises(InvalidArgument):
            check_options(bad)


async def test_first_profile_is_default_and_delete_clears_it(backend: Backend) -> None:
    events: list[Event] = []
    backend.events.subscribe(events.append)
    info = await backend.profiles.create("one", "a@example.org", "pw", {"port": 5222})
    assert (info.name, info.jid, info.options) == ("one", "a@example.org", {"port": 5222})
    assert not hasattr(info, "password")
    await backend.profiles.create("two", "b@example.org", "pw", {})
    assert backend.profiles.default == "one"
    assert await backend.profiles.list() == ["one", "two"]
    with pytest.raises(Conflict):
        await backend.profiles.create("one", "c@example.org", "pw", {})
    await backend.profiles.set_default("two")
    await backend.delete_profile("two")
    assert backend.profiles.default == ""
    assert events == [
        DefaultProfileChanged("one"),
        DefaultProfileChanged("two"),
        DefaultProfileChanged(""),
    ]
    with pytest.raises(NotFound, match="no default profile"):
        await backend.profiles.resolve("")


async def test_the_default_survives_a_restart(sqlite_url: str) -> None:
    backend = await Backend.open(Config(), sqlite_url)
    await backend.profiles.create("one", "a@example.org", "pw", {})
    await backend.profiles.create("two", "b@example.org", "pw", {})
    await backend.profiles.set_default("two")
    await backend.close()
    again = await Backend.open(Config(), sqlite_url)
    try:
        assert again.profiles.default == "two"
        assert await again.profiles.credentials("") == ("b@example.org", "pw")
    finally:
        await again.close()


async def test_the_password_is_not_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # The SQL drivers' own loggers are pinned above debug by roostd (a bus test checks
    # the daemon's whole log); here, Roost's loggers.
    caplog.set_level(logging.DEBUG, logger="roost")
    await backend.profiles.create("one", "a@example.org", "s3cret-pw-91", {})
    with pytest.raises(Conflict):
        await backend.profiles.create("one", "a@example.org", "s3cret-pw-91", {})
    info = await backend.profiles.get("one")
    assert "s3cret" not in repr(info)
    assert "s3cret" not in caplog.text


async def test_connect_to_an_unreachable_server_fails_cleanly(
    backend: Backend, unused_tcp_port: int
) -> None:
    options = {"host": "127.0.0.1", "port": unused_tcp_port, "tls": "none"}
    await backend.profiles.create("one", "a@example.org", "pw", options)
    with pytest.raises(ConnectionFailed) as caught:
        await backend.connect("one")
    assert caught.value.name == "NotConnected"
    assert not await backend.is_connected("one")
    with pytest.raises(NotFound):
        await backend.connect("ghost")


class FakeSessions:
    """Stands in for the XMPP session manager: records what it was asked."""

    def __init__(self) -> None:
        self.up: set[str] = set()

    async def connect(self, name: str) -> str:
        self.up.add(name)
        return f"{name}@example.org/roost"

    async def disconnect(self, name: str) -> None:
        self.up.discard(name)

    def is_connected(self, name: str) -> bool:
        return name in self.up


async def test_sessions_are_reached_through_the_backend(backend: Backend) -> None:
    sessions = FakeSessions()
    backend.sessions = sessions
    await backend.profiles.create("one", "a@example.org", "pw", {})
    assert await backend.connect("") == "one@example.org/roost"
    assert await backend.is_connected("one")
    # Deleting a connected profile closes its session first.
    await backend.delete_profile("one")
    assert sessions.up == set()
