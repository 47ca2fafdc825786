"""Service-level XMPP fixtures: a SessionManager over the test servers' accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.events import Event, EventHub
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.xmpp import XmppServer


class Recorder:
    """Collects the hub's events so that tests can wait for one."""

    def __init__(self, hub: EventHub) -> None:
        self.events: list[Event] = []
        hub.subscribe(self.events.append)

    def of(self, kind: type[Any]) -> list[Any]:
        """The recorded events of one class, in order."""
        return [event for event in self.events if isinstance(event, kind)]


@pytest.fixture
def hub() -> EventHub:
    """A fresh event hub."""
    return EventHub()


@pytest.fixture
def recorder(hub: EventHub) -> Recorder:
    """Records every event published on ``hub``."""
    return Recorder(hub)


def make_lookup(server: XmppServer, overrides: dict[str, Any] | None = None) -> Any:
    """A credentials lookup where profile names are the server's user names.

    ``overrides`` maps a profile name to option overrides (or a wrong ``password``).
    """

    async def lookup(name: str) -> tuple[str, str, dict[str, Any]]:
        jid, password, options = server.credentials(name)
        extra = dict((overrides or {}).get(name, {}))
        password = extra.pop("password", password)
        return jid, password, {**options, **extra}

    return lookup


@pytest.fixture
async def sessions(xmpp_server: XmppServer, hub: EventHub) -> AsyncIterator[SessionManager]:
    """A SessionManager whose profiles are the server's users, closed at the end."""
    manager = SessionManager(make_lookup(xmpp_server), hub, retry_initial=0.2, retry_max=1.0)
    yield manager
    await manager.close()
