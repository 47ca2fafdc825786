"""Per-profile XMPP sessions: connect, disconnect, keep alive with backoff.

The SessionManager owns one RoostClient per connected profile, in the caller's event
loop. It knows nothing of how profiles are stored: a credentials lookup gives it the JID,
password and connection options of a profile name. It announces ProfileConnected and
ProfileDisconnected on the EventHub; listeners for a session's stanzas (pubsub events)
attach with ``on_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from roost.service.errors import ConnectionFailed, NotConnected
from roost.service.events import EventHub, ProfileConnected, ProfileDisconnected
from roost.service.xmpp.client import (
    DEFAULT_REQUEST_TIMEOUT,
    SESSION_READY,
    ConnectionOptions,
    RoostClient,
)

log = logging.getLogger(__name__)

CredentialsLookup = Callable[[str], Awaitable[tuple[str, str, dict[str, Any]]]]
ClientListener = Callable[[str, RoostClient], None]

CONNECT_TIMEOUT = 20.0


class _Session:
    """One profile's client plus the task that brings it back after a loss."""

    def __init__(self, name: str, client: RoostClient) -> None:
        self.name = name
        self.client = client
        self.up = False
        self.wanted = True
        self.retry_task: asyncio.Task[None] | None = None


class SessionManager:
    """Opens, watches and closes the XMPP sessions of profiles.

    ``retry_initial`` and ``retry_max`` bound the backoff (seconds, doubling) between
    attempts to bring back a lost session; ``request_timeout`` how long a request to
    the server may go unanswered (each client's ``request_timeout``).
    """

    def __init__(
        self,
        credentials: CredentialsLookup,
        hub: EventHub,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._credentials = credentials
        self._hub = hub
        self._sessions: dict[str, _Session] = {}
        self._listeners: list[ClientListener] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout

    def on_client(self, listener: ClientListener) -> Callable[[], None]:
        """Call ``listener(profile, client)`` for every client: those of the sessions
        open now, and each created from now on; returns the function that stops it."""
        for profile, session in self._sessions.items():
            listener(profile, session.client)
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def connect(self, profile: str) -> str:
        """Open the profile's session; returns the bound full JID.

        Already connected: returns the current JID at once.

        Raises:
            ConnectionFailed: bad credentials, server unreachable, or TLS required but
                unavailable; the message says which.
        """
        lock = self._locks.setdefault(profile, asyncio.Lock())
        # Two Connect calls for one profile must share one session, not race two clients.
        async with lock:
            return await self._connect(profile)

    async def _connect(self, profile: str) -> str:
        session = self._sessions.get(profile)
        if session is not None and session.up:
            return str(session.client.boundjid.full)
        if session is not None:
            await self._drop(session, announce=False)
        jid, password, raw_options = await self._credentials(profile)
        options = ConnectionOptions.from_dict(raw_options)
        client = RoostClient(jid, password, options, self._request_timeout)
        session = _Session(profile, client)
        self._sessions[profile] = session
        for listener in self._listeners:
            listener(profile, client)
        try:
            await self._attempt(session)
        except BaseException:
            self._sessions.pop(profile, None)
            raise
        client.add_event_handler("disconnected", lambda reason: self._on_lost(session, reason))
        return str(client.boundjid.full)

    async def disconnect(self, profile: str) -> None:
        """Close the profile's session and stop any reconnection; no-op when offline."""
        session = self._sessions.get(profile)
        if session is None:
            return
        await self._drop(session, announce=True, reason="disconnected on request")

    def is_connected(self, profile: str) -> bool:
        """Whether the profile's session is up now."""
        session = self._sessions.get(profile)
        return session is not None and session.up

    def client(self, profile: str) -> RoostClient:
        """The profile's live client.

        Raises:
            NotConnected: the profile has no session up.
        """
        session = self._sessions.get(profile)
        if session is None or not session.up:
            raise NotConnected(f"profile {profile!r} is not connected; connect it first")
        return session.client

    def connected_profiles(self) -> list[str]:
        """Names of the profiles whose session is up."""
        return [name for name, session in self._sessions.items() if session.up]

    async def close(self) -> None:
        """Close every session (daemon shutdown)."""
        for session in list(self._sessions.values()):
            await self._drop(session, announce=True, reason="the daemon is shutting down")

    # -- internals ----------------------------------------------------------------------

    async def _attempt(self, session: _Session) -> None:
        """One connection attempt; up on return, else ConnectionFailed."""
        client = session.client
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[str | None] = loop.create_future()

        def settle(result: str | None) -> None:
            if not outcome.done():
                outcome.set_result(result)

        server = client.server_address() or (client.boundjid.domain, 5222)
        where = f"{server[0]}:{server[1]}"
        handlers: list[tuple[str, Callable[[Any], None]]] = [
            (SESSION_READY, lambda _e: settle(None)),
            ("failed_all_auth", lambda _e: settle("the server refused the JID or password")),
            ("no_auth", lambda _e: settle("the server offers no usable authentication")),
            (
                "tls_unavailable",
                lambda _e: settle(f"TLS is required but the server at {where} does not offer it"),
            ),
            ("connection_failed", lambda e: settle(self._unreachable(client, where, e))),
            ("ssl_invalid_chain", lambda e: settle(self._untrusted(where, e))),
            ("disconnected", lambda e: settle(self._closed(where, e))),
        ]
        for event, handler in handlers:
            client.add_event_handler(event, handler)
        try:
            address = client.server_address()
            if address is None:
                client.connect()
            else:
                client.connect(*address)
            try:
                failure = await asyncio.wait_for(outcome, self._connect_timeout)
            except TimeoutError:
                failure = f"no session with the server at {where} after {self._connect_timeout:g} s"
        finally:
            for event, handler in handlers:
                client.del_event_handler(event, handler)
        if failure is not None:
            client.cancel_connection_attempt()
            client.abort()
            raise ConnectionFailed(f"cannot connect {session.name!r}: {failure}")
        session.up = True
        self._hub.publish(ProfileConnected(session.name, str(client.boundjid.full)))

    @staticmethod
    def _closed(where: str, reason: Any) -> str:
        # A STARTTLS handshake that failed on the certificate closes the connection
        # with the error as its reason, before slixmpp's own event for it.
        if isinstance(reason, ssl.SSLCertVerificationError):
            return SessionManager._untrusted(where, reason)
        # slixmpp passes the reason Roost's client gave when it ended the stream itself
        # (a refused stream); a close by the server comes with none.
        if isinstance(reason, str) and reason:
            return f"the connection to the server at {where} was closed: {reason}"
        return f"the server at {where} closed the connection"

    @staticmethod
    def _untrusted(where: str, error: Any) -> str:
        reason = getattr(error, "verify_message", "") or getattr(error, "reason", "") or error
        return (
            f"the certificate of the server at {where} cannot be trusted ({reason}); if it "
            "is the right server, give its certificate authority with the profile's "
            "ca_file option"
        )

    @staticmethod
    def _unreachable(client: RoostClient, where: str, error: Any) -> str:
        if isinstance(error, ssl.SSLCertVerificationError):
            return SessionManager._untrusted(where, error)
        if client.options.tls == "required" and not isinstance(error, ConnectionError):
            return f"TLS is required but no TLS connection could be made to {where} ({error})"
        return f"the server at {where} is unreachable ({error})"

    def _on_lost(self, session: _Session, reason: Any) -> None:
        if not session.up or not session.wanted:
            return
        session.up = False
        text = f"connection to the server lost ({reason})" if reason else "connection lost"
        self._hub.publish(ProfileDisconnected(session.name, text))
        if session.retry_task is None or session.retry_task.done():
            session.retry_task = asyncio.ensure_future(self._retry(session))

    async def _retry(self, session: _Session) -> None:
        delay = self._retry_initial
        while True:
            await asyncio.sleep(delay)
            if self._settled(session):
                return
            try:
                await self._attempt(session)
            except ConnectionFailed as exc:
                log.info("reconnecting %s failed: %s", session.name, exc.message)
                delay = min(delay * 2, self._retry_max)
            else:
                return

    @staticmethod
    def _settled(session: _Session) -> bool:
        return session.up or not session.wanted

    async def _drop(self, session: _Session, *, announce: bool, reason: str = "") -> None:
        session.wanted = False
        was_up = session.up
        session.up = False
        if session.retry_task is not None:
            session.retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.retry_task
        client = session.client
        client.cancel_connection_attempt()
        if client.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(wait=1.0, reason=reason), 3.0)
        self._sessions.pop(session.name, None)
        if announce and was_up:
            self._hub.publish(ProfileDisconnected(session.name, reason))
