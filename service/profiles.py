"""Profiles: the XMPP accounts the daemon keeps, and which one is the default.

A profile has a name (how frontends refer to it), a bare JID, a password and connection
options. The password is written to the database and handed to the XMPP session layer
through :meth:`ProfileService.credentials`; nothing else returns it and nothing logs it.

Limits, checked before anything is stored:

- name: 1 to 64 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit
  (:data:`PROFILE_NAME_RE`);
- JID: a valid bare JID with a local part (``user@example.org``), at most 3071 bytes;
- password: 1 to 1024 characters;
- options: ``host`` (non-empty string without spaces, at most 255 characters), ``port``
  (integer 1..65535), ``tls`` (``required``, ``starttls`` or ``none``), ``autoconnect``
  (boolean); any other key is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slixmpp import JID
from slixmpp.jid import InvalidJID

from roost.service.errors import Conflict, InvalidArgument, NotFound
from roost.service.events import DefaultProfileChanged, EventHub
from roost.storage.database import Database
from roost.storage.errors import AlreadyExists, RowNotFound
from roost.storage.records import ProfileRecord

log = logging.getLogger(__name__)

PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_JID_BYTES = 3071
MAX_PASSWORD_LENGTH = 1024
MAX_HOST_LENGTH = 255
TLS_MODES = ("required", "starttls", "none")
OPTION_KEYS = ("host", "port", "tls", "autoconnect")

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
        elif key == "autoconnect":
            if not isinstance(value, bool):
                raise InvalidArgument("option autoconnect must be a boolean")
        else:
            raise InvalidArgument(
                f"unknown profile option {key!r}: known options are {', '.join(OPTION_KEYS)}"
            )
        checked[key] = value
    return checked


class ProfileService:
    """Creates, lists and deletes profiles and keeps track of the default one.

    The default profile is read from the database by :meth:`load` and cached, so that
    reading it (a D-Bus property) needs no database round trip.
    """

    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events
        self._default = ""
        # Names of existing profiles, so that resolving the profile argument of every
        # call (GetItems on the hot path included) costs no database round trip. This
        # daemon is the only writer of the profiles table.
        self._names: set[str] | None = None
        self.on_deleted: list[Callable[[str], None]] = []
        """Called with a profile's name once it is deleted (caches drop what they hold)."""

    async def load(self) -> None:
        """Read the stored default profile; forget it if that profile is gone."""
        stored = await self._db.params.get_param(
            None, DEFAULT_PROFILE_CATEGORY, DEFAULT_PROFILE_PARAM
        )
        self._default = stored or ""
        if self._default and not await self._exists(self._default):
            log.warning("the default profile %r no longer exists; no default now", stored)
            await self._store_default("")

    @property
    def default(self) -> str:
        """The default profile's name, empty when there is none."""
        return self._default

    async def set_default(self, name: str) -> None:
        """Make ``name`` the default profile (empty: none); announces the change."""
        if name:
            await self.require(name)
        if name != self._default:
            await self._store_default(name)

    async def _store_default(self, name: str) -> None:
        await self._db.params.set_param(None, DEFAULT_PROFILE_CATEGORY, DEFAULT_PROFILE_PARAM, name)
        self._default = name
        log.info("default profile is now %r", name)
        self._events.publish(DefaultProfileChanged(name))

    async def create(
        self, name: str, jid: str, password: str, options: Mapping[str, Any]
    ) -> ProfileInfo:
        """Validate and store a new profile; the first one becomes the default.

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
            raise Conflict(f"a profile named {name!r} exists already") from None
        if self._names is not None:
            self._names.add(name)
        log.info("created profile %r for %s", name, bare)
        if not self._default:
            await self._store_default(name)
        return ProfileInfo(record.name, record.jid, dict(record.options), record.created)

    async def delete(self, name: str) -> None:
        """Delete a profile and everything stored for it (params, values, cache).

        Raises:
            NotFound: no such profile.
        """
        check_profile_name(name)
        try:
            await self._db.profiles.delete_profile(name)
        except RowNotFound:
            raise NotFound(f"no profile named {name!r}") from None
        if self._names is not None:
            self._names.discard(name)
        log.info("deleted profile %r", name)
        for forget in self.on_deleted:
            forget(name)
        if self._default == name:
            await self._store_default("")

    async def list(self) -> list[str]:
        """Every profile's name, sorted."""
        return sorted(record.name for record in await self._db.profiles.list_profiles())

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
        if self._names is None:
            self._names = {r.name for r in await self._db.profiles.list_profiles()}
        return name in self._names

    async def require(self, name: str) -> str:
        """Return ``name`` if such a profile exists, else raise NotFound/InvalidArgument."""
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
                raise NotFound("no default profile is set: name a profile or set Default")
            return self._default
        return check_profile_name(name)

    async def resolve(self, name: str) -> str:
        """Map ``""`` to the default profile and check that the profile exists."""
        return await self.require(self.resolve_name(name))


def not_found(name: str) -> NotFound:
    """The error for an unknown profile, pointing at the way to list them."""
    return NotFound(f"no profile named {name!r}; List() gives the existing ones")
