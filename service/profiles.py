"""Profiles: the XMPP accounts the daemon keeps, and which one is the default.

A profile has a name (how frontends refer to it), a bare JID, a password and connection
options. The password is written to the database and handed to the XMPP session layer
through :meth:`ProfileService.credentials`; nothing else returns it and nothing logs it.

A daemon serves a profile under its lease (:mod:`roost.storage.leases`), so that
several daemons can share one database, each serving its own profiles: the lease is
taken the first time the daemon acts for the profile (:meth:`ProfileService.resolve`,
which every such call goes through), or when it creates it, and kept until the profile
is deleted or the daemon stops. A profile another daemon serves is refused with
:class:`~roost.service.errors.Conflict`, naming that daemon. The profile list and the
default profile belong to the whole database: on a database shared by several daemons
they are read again where another daemon may have changed them.

Limits, checked before anything is stored:

- name: 1 to 64 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit
  (:data:`PROFILE_NAME_RE`);
- JID: a valid bare JID with a local part (``user@example.org``), at most 3071 bytes;
- password: 1 to 1024 characters;
- options: ``host`` (non-empty string without spaces, at most 255 characters), ``port``
  (integer 1..65535), ``tls`` (``required``, ``starttls`` or ``none``), ``autoconnect``
  (boolean), ``verify_certificate`` (boolean), ``ca_file`` (an absolute path of at most
  4096 characters); any other key is refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slixmpp import JID
from slixmpp.jid import InvalidJID

from roost.service.errors import Conflict, InvalidArgument, NotFound
from roost.service.events import DefaultProfileChanged, EventHub
from roost.storage.database import Database
from roost.storage.errors import AlreadyExists, RowNotFound
from roost.storage.leases import LeaseHeld
from roost.storage.records import ProfileRecord

log = logging.getLogger(__name__)

PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_JID_BYTES = 3071
MAX_PASSWORD_LENGTH = 1024
MAX_HOST_LENGTH = 255
TLS_MODES = ("required", "starttls", "none")
OPTION_KEYS = ("host", "port", "tls", "autoconnect", "verify_certificate", "ca_file")
MAX_CA_FILE_LENGTH = 4096

# The default profile is a global parameter in a category no caller may write
# (the settings service refuses categories starting with "@").
DEFAULT_PROFILE_CATEGORY = "@roost"
DEFAULT_PROFILE_PARAM = "default_profile"


@dataclass(frozen=True)
class ProfileInfo:
    """What may be said of a profile: everything but its password."""

    name: str
    jid: str
    options: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise :class:`InvalidArgument`."""
    if not isinstance(name, str) or not PROFILE_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid profile name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_bare_jid(jid: str) -> str:
    """Return the normalised bare JID, or raise :class:`InvalidArgument` saying why not."""
    if not isinstance(jid, str) or not jid:
        raise InvalidArgument("the JID is empty: give the account's address, user@example.org")
    if len(jid.encode("utf-8", "surrogatepass")) > MAX_JID_BYTES:
        raise InvalidArgument(f"the JID is longer than {MAX_JID_BYTES} bytes")
    try:
        parsed = JID(jid)
    except (InvalidJID, UnicodeError, ValueError) as err:
        raise InvalidArgument(f"invalid JID {jid!r}: {err}") from None
    if parsed.resource:
        raise InvalidArgument(f"the JID {jid!r} has a resource: give the bare JID {parsed.bare!r}")
    if not parsed.user:
        raise InvalidArgument(f"the JID {jid!r} has no local part: give user@{parsed.domain}")
    return str(parsed.bare)


def check_password(password: str) -> str:
    """Return ``password`` if acceptable; the message never repeats it."""
    if not isinstance(password, str) or not password:
        raise InvalidArgument("the password is empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        raise InvalidArgument("the password contains a NUL character")
    return password


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate connection options; return them as a plain dict."""
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key == "host":
            if (
                not isinstance(value, str)
                or not value
                or len(value) > MAX_HOST_LENGTH
                or any(c.isspace() or not c.isprintable() for c in value)
            ):
                raise InvalidArgument(
                    f"option host must be a host name or address of 1 to {MAX_HOST_LENGTH} "
                    "printable characters without spaces"
                )
        elif key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise InvalidArgument("option port must be an integer from 1 to 65535")
        elif key == "tls":
            if value not in TLS_MODES:
                raise InvalidArgument(f"option tls must be one of {', '.join(TLS_MODES)}")
        elif key in ("autoconnect", "verify_certificate"):
            if not isinstance(value, bool):
                raise InvalidArgument(f"option {key} must be a boolean")
        elif key == "ca_file":
            _check_ca_file(value)
        else:
            raise InvalidArgument(
                f"unknown profile option {key!r}: known options are {', '.join(OPTION_KEYS)}"
            )
        checked[key] = value
    return checked


def _check_ca_file(value: Any) -> None:
    # Whether the file exists and holds certificates is checked when the profile
    # connects, which says so; the daemon may start before the file is in place.
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > MAX_CA_FILE_LENGTH
        or any(not c.isprintable() for c in value)
    ):
        raise InvalidArgument(
            "option ca_file must be the absolute path of a file of PEM certificates, "
            f"at most {MAX_CA_FILE_LENGTH} printable characters"
        )


class ProfileService:
    """Creates, lists and deletes profiles, keeps track of the default one, and holds
    the leases of the profiles this daemon serves.

    The default profile is read from the database by :meth:`load` and cached, so that
    reading it (a D-Bus property) needs no database round trip; on a database shared by
    several daemons, a call naming the default profile reads it again.
    """

    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events
        self._default = ""
        # Names of existing profiles, so that checking a name costs no database round
        # trip. On a shared database another daemon may add profiles: a miss reads the
        # table again.
        self._names: set[str] | None = None
        # The profiles this daemon serves, by name, with their ids: resolving the
        # profile argument of every call (GetItems and GetValues on the hot path
        # included) is one look-up here once the lease is held.
        self._leased: dict[str, int] = {}
        self._leasing = asyncio.Lock()
        self.on_deleted: list[Callable[[str], None]] = []
        """Called with a profile's name once it is deleted (caches drop what they hold)."""
        self.on_leased: list[Callable[[str], Awaitable[None]]] = []
        """Awaited with a profile's name once its lease is taken, before the call that
        took it goes on: what was read of the profile before (at start) may have been
        changed since by the daemon that served it then."""
        self.on_lease_lost: list[Callable[[str], None]] = []
        """Called with a profile's name when its lease was lost to another daemon (see
        :class:`~roost.storage.leases.ProfileLeases`): this daemon stops serving it."""
        db.leases.on_lost.append(self._lease_lost)

    async def load(self) -> None:
        """Read the stored default profile; forget it if that profile is gone."""
        stored = await self._stored_default()
        self._default = stored
        if self._default and not await self._exists(self._default):
            log.warning("the default profile %r no longer exists; no default now", stored)
            await self._store_default("")

    @property
    def default(self) -> str:
        """The default profile's name, empty when there is none."""
        return self._default

    async def _stored_default(self) -> str:
        stored = await self._db.params.get_param(
            None, DEFAULT_PROFILE_CATEGORY, DEFAULT_PROFILE_PARAM
        )
        return stored or ""

    async def _current_default(self) -> str:
        """The default profile, read again on a shared database (another daemon may
        have changed it); a change is announced as if made here."""
        if self._db.shares_database:
            stored = await self._stored_default()
            if stored != self._default:
                self._default = stored
                self._events.publish(DefaultProfileChanged(stored))
        return self._default

    async def set_default(self, name: str) -> None:
        """Make ``name`` the default profile (empty: none); announces the change."""
        if name:
            await self.require(name)
        if name != await self._current_default():
            await self._store_default(name)

    async def _claim_default(self, name: str) -> None:
        """Make ``name`` the default unless another profile became it meanwhile: of
        creates racing on a database with no default (here or in another daemon), the
        first to write wins and the others leave it."""
        default = await self._db.params.claim_param(
            None, DEFAULT_PROFILE_CATEGORY, DEFAULT_PROFILE_PARAM, name
        )
        if default != self._default:
            self._default = default
            log.info("default profile is now %r", default)
            self._events.publish(DefaultProfileChanged(default))

    async def _store_default(self, name: str) -> None:
        await self._db.params.set_param(None, DEFAULT_PROFILE_CATEGORY, DEFAULT_PROFILE_PARAM, name)
        self._default = name
        log.info("default profile is now %r", name)
        self._events.publish(DefaultProfileChanged(name))

    async def create(
        self, name: str, jid: str, password: str, options: Mapping[str, Any]
    ) -> ProfileInfo:
        """Validate and store a new profile, and take its lease; the first one becomes
        the default.

        Raises:
            InvalidArgument: a malformed name, JID, password or option.
            Conflict: a profile of that name exists already.
        """
        check_profile_name(name)
        bare = check_bare_jid(jid)
        check_password(password)
        checked = check_options(options)
        try:
            record = await self._db.profiles.create_profile(name, bare, password, checked)
        except AlreadyExists:
            raise Conflict(
                f"a profile named {name!r} exists already; choose another name, or Delete it first"
            ) from None
        if self._names is not None:
            self._names.add(name)
        log.info("created profile %r for %s", name, bare)
        async with self._leasing:
            await self._acquire(record.id, name)
            self._leased[name] = record.id
        if not await self._current_default():
            await self._claim_default(name)
        return ProfileInfo(record.name, record.jid, dict(record.options), record.created)

    async def delete(self, name: str) -> None:
        """Delete a profile and everything stored for it (params, values, cache).

        Raises:
            NotFound: no such profile.
            Conflict: another daemon serves it.
        """
        await self._lease(name)
        try:
            await self._db.profiles.delete_profile(name)
        except RowNotFound:
            raise NotFound(f"no profile named {name!r}") from None
        finally:
            profile_id = self._leased.pop(name)
            await self._db.leases.release(profile_id)
        if self._names is not None:
            self._names.discard(name)
        log.info("deleted profile %r", name)
        for forget in self.on_deleted:
            forget(name)
        if await self._current_default() == name:
            await self._store_default("")

    async def list(self) -> list[str]:
        """Every profile's name, sorted (also those other daemons serve)."""
        names = sorted(record.name for record in await self._db.profiles.list_profiles())
        self._names = set(names)
        return names

    async def get(self, name: str) -> ProfileInfo:
        """The profile ``name`` without its password (``""``: the default profile)."""
        record = await self._record(self.resolve_name(name))
        return ProfileInfo(record.name, record.jid, dict(record.options), record.created)

    async def credentials(self, name: str) -> tuple[str, str]:
        """The JID and password of ``name``, for the XMPP session layer only."""
        record = await self._record(self.resolve_name(name))
        return record.jid, record.password

    async def _record(self, name: str) -> ProfileRecord:
        try:
            return await self._db.profiles.get_profile(name)
        except RowNotFound:
            raise not_found(name) from None

    async def _exists(self, name: str) -> bool:
        if self._names is None or (self._db.shares_database and name not in self._names):
            self._names = {r.name for r in await self._db.profiles.list_profiles()}
        return name in self._names

    async def require(self, name: str) -> str:
        """Return ``name`` if such a profile exists, else raise NotFound/InvalidArgument.

        Whether this daemon may serve it is not asked: see :meth:`resolve`.
        """
        check_profile_name(name)
        if not await self._exists(name):
            raise not_found(name)
        return name

    def resolve_name(self, name: str) -> str:
        """Map ``""`` to the default profile and check the name's form (not that it exists).

        Callers whose store raises ``RowNotFound`` for an unknown profile use this and
        save a round trip; the others use :meth:`resolve`.
        """
        if name == "":
            if not self._default:
                raise _no_default()
            return self._default
        return check_profile_name(name)

    async def find(self, name: str) -> str:
        """Map ``""`` to the default profile and check that the profile exists, without
        taking its lease (for calls that act for no profile, such as IsConnected)."""
        return await self.require(await self._named(name))

    async def resolve(self, name: str) -> str:
        """Map ``""`` to the default profile, check that the profile exists, and take
        its lease if this daemon does not hold it yet: every call that acts for a
        profile goes through here.

        Raises:
            NotFound: no such profile, or no default profile.
            InvalidArgument: a malformed name.
            Conflict: another daemon serves the profile.
        """
        if name in self._leased:
            return name
        return await self._lease(await self._named(name))

    async def _named(self, name: str) -> str:
        if name:
            return check_profile_name(name)
        default = await self._current_default()
        if not default:
            raise _no_default()
        return default

    async def _lease(self, name: str) -> str:
        """Take the lease of ``name`` (a profile's name), once."""
        check_profile_name(name)
        async with self._leasing:
            if name in self._leased:
                return name
            record = await self._record(name)
            await self._acquire(record.id, name)
            # Between the read and the lease, the daemon that held the lease may have
            # deleted the profile (and another made one of that name): the lease must be
            # that of the profile the name means now.
            try:
                now = await self._db.profiles.get_profile(name)
            except RowNotFound:
                now = None
            if now is None or now.id != record.id:
                await self._db.leases.release(record.id)
                if self._names is not None:
                    self._names.discard(name)
                raise not_found(name)
            self._leased[name] = record.id
            if self._names is not None:
                self._names.add(name)
            log.info("serving profile %r", name)
            for taken in self.on_leased:
                await taken(name)
        return name

    async def _acquire(self, profile_id: int, name: str) -> None:
        try:
            await self._db.leases.acquire(profile_id, name)
        except LeaseHeld as held:
            raise Conflict(
                f"profile {name!r} is served by another Roost daemon on this database"
                f" ({held.holder}); use that daemon, or stop it first"
            ) from None

    def _lease_lost(self, _profile_id: int, name: str) -> None:
        if self._leased.pop(name, None) is None:
            return
        log.error("profile %r is no longer served here: another daemon took its lease", name)
        for lost in self.on_lease_lost:
            lost(name)

    @property
    def leased(self) -> frozenset[str]:
        """The names of the profiles this daemon serves (holds the lease of)."""
        return frozenset(self._leased)

    @property
    def shares_database(self) -> bool:
        """Whether other daemons may use the database, each serving its own profiles."""
        return self._db.shares_database


def _no_default() -> NotFound:
    return NotFound("no default profile is set: name a profile or set Default")


def not_found(name: str) -> NotFound:
    """The error for an unknown profile, pointing at the way to list them."""
    return NotFound(f"no profile named {name!r}; List() gives the existing ones")
