"""Parameters and the namespaced key/value store, per profile or global.

A ``profile`` argument is a profile name, ``""`` for the default profile, or
:data:`GLOBAL` (``@global@``) for values that belong to no profile.

Limits, checked before anything is stored (a refused call changes nothing):

- category, parameter name, namespace and key: 1 to :data:`MAX_NAME_LENGTH` (255)
  printable characters; a category or namespace written may not start with ``@``
  (Roost's own: ``Forbidden``);
- parameter value: at most :data:`MAX_PARAM_LENGTH` (65536) characters;
- stored value: its JSON encoding at most :data:`MAX_VALUE_BYTES` (65536) bytes, its
  type tag at most 255 characters; NaN and infinities are refused (JSON has none);
- at most :data:`MAX_KEYS_PER_NAMESPACE` (1024) keys per namespace and profile, and at
  most as many keys asked for in one :meth:`SettingsService.get_values` call;
- at most :data:`MAX_NAMESPACE_BYTES` (2 MiB) of stored values (their JSON) per
  namespace and profile, and :data:`MAX_CATEGORY_BYTES` (4 MiB) of parameter names and
  values (UTF-8) per category and profile, so that a whole namespace or category always
  fits in one reply under the bus bound (docs/dbus-api.md, "Reply size bounds").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from weakref import WeakValueDictionary

from roost.service.errors import Forbidden, InvalidArgument, NotFound
from roost.service.events import EventHub, ParamChanged
from roost.service.profiles import ProfileService, not_found
from roost.service.value_cache import ValueCache
from roost.storage.database import Database
from roost.storage.errors import RowNotFound

log = logging.getLogger(__name__)

GLOBAL = "@global@"
MAX_NAME_LENGTH = 255
MAX_PARAM_LENGTH = 65536
MAX_VALUE_BYTES = 65536
MAX_TYPE_LENGTH = 255
MAX_KEYS_PER_NAMESPACE = 1024
# GetValues answers a whole namespace at once. D-Bus marshals a value in less than three
# times its JSON (the densest is an array of 64-bit integers: 8 bytes for each "0, "), so
# 2 MiB stored is under 6 MiB on the bus, within the 8 MiB bound of every Roost reply.
MAX_NAMESPACE_BYTES = 2 * 1024 * 1024
# ListParams answers a whole category at once: names and values go as they are.
MAX_CATEGORY_BYTES = 4 * 1024 * 1024


def check_name(kind: str, value: str, *, reserved_prefix: bool = False) -> str:
    """Return ``value`` if it is a usable category/name/namespace/key."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"the {kind} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"the {kind} is longer than {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise InvalidArgument(f"the {kind} {value!r} contains non-printable characters")
    if reserved_prefix and value.startswith("@"):
        # A well-formed name the caller may not write: Roost keeps its own settings there.
        raise Forbidden(
            f"the {kind} {value!r} starts with '@', which Roost reserves for its own "
            f"settings; choose a {kind} without a leading '@'"
        )
    return value


def _check_text(kind: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"the {kind} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidArgument(f"the {kind} contains a NUL character")
    # Lone surrogates cannot be stored as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"the {kind} is not valid Unicode text") from None
    return value


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _json_bytes(value: Any) -> int:
    """A stored value's size as its limits count it: its JSON in UTF-8 bytes."""
    return len(json.dumps(value, ensure_ascii=False).encode())


@contextmanager
def _known_profile(owner: str | None) -> Iterator[None]:
    """Turn the store's unknown-profile error into the service's NotFound."""
    try:
        yield
    except RowNotFound:
        if owner is None:
            raise
        raise not_found(owner) from None


class SettingsService:
    """Reads and writes parameters and key/value entries; announces parameter changes."""

    def __init__(self, db: Database, events: EventHub, profiles: ProfileService) -> None:
        self._db = db
        self._events = events
        self._profiles = profiles
        self._cache = ValueCache()
        # One lock a namespace, not one for every value: writes to different namespaces
        # (each frontend keeps its own) must not queue behind each other. A lock lives
        # while a call holds or waits for it.
        self._namespace_locks: WeakValueDictionary[tuple[str | None, str], asyncio.Lock] = (
            WeakValueDictionary()
        )
        self._params_lock = asyncio.Lock()
        profiles.on_deleted.append(self._cache.forget_owner)
        profiles.on_lease_lost.append(self._cache.forget_owner)

    def _namespace_lock(self, owner: str | None, namespace: str) -> asyncio.Lock:
        """The lock that orders the loads and writes of one namespace's copy."""
        lock = self._namespace_locks.get((owner, namespace))
        if lock is None:
            lock = self._namespace_locks[(owner, namespace)] = asyncio.Lock()
        return lock

    async def _owner(self, profile: str) -> str | None:
        """The storage owner of ``profile``: a profile name (its lease held, see
        :meth:`ProfileService.resolve`), or None for global."""
        if profile == GLOBAL:
            return None
        return await self._profiles.resolve(profile)

    def _cached(self, owner: str | None) -> bool:
        """Whether ``owner``'s namespaces are kept in memory: a profile's are (its lease
        keeps other daemons from writing them); global ones only when no other daemon
        can write them."""
        return owner is not None or not self._db.shares_database

    async def get_param(self, profile: str, category: str, name: str) -> str:
        """The parameter's value.

        Raises:
            NotFound: the profile or the parameter does not exist.
        """
        check_name("category", category)
        check_name("parameter name", name)
        owner = await self._owner(profile)
        with _known_profile(owner):
            value = await self._db.params.get_param(owner, category, name)
        if value is None:
            raise NotFound(
                f"no parameter {category}/{name} for {owner or GLOBAL}; SetParam creates it"
            )
        return value

    async def set_param(self, profile: str, category: str, name: str, value: str) -> None:
        """Store a parameter and announce it with :class:`ParamChanged`."""
        check_name("category", category, reserved_prefix=True)
        check_name("parameter name", name)
        _check_text("parameter value", value, MAX_PARAM_LENGTH)
        owner = await self._owner(profile)
        # Under the lock, so that two writes cannot both pass the category's bound.
        async with self._params_lock:
            with _known_profile(owner):
                held = await self._db.params.list_params(owner, category)
                others = sum(_utf8(k) + _utf8(v) for k, v in held.items() if k != name)
                if others + _utf8(name) + _utf8(value) > MAX_CATEGORY_BYTES:
                    raise InvalidArgument(
                        f"the category {category!r} would hold more than "
                        f"{MAX_CATEGORY_BYTES // (1024 * 1024)} MiB of parameters; "
                        "delete some of its parameters or use another category"
                    )
                await self._db.params.set_param(owner, category, name, value)
        self._events.publish(ParamChanged(owner or GLOBAL, category, name, value))

    async def list_params(self, profile: str, category: str) -> dict[str, str]:
        """Every parameter of ``category``, name to value (empty when there is none)."""
        check_name("category", category)
        owner = await self._owner(profile)
        with _known_profile(owner):
            return dict(await self._db.params.list_params(owner, category))

    async def get_values(
        self, profile: str, namespace: str, keys: Sequence[str]
    ) -> dict[str, tuple[str, Any]]:
        """The stored values of ``keys`` (every key when empty) as (type tag, value).

        Keys that are not stored are absent from the result. Answered from memory when
        the namespace was used recently (see :mod:`roost.service.value_cache`).
        """
        check_name("namespace", namespace)
        if len(keys) > MAX_KEYS_PER_NAMESPACE:
            raise InvalidArgument(f"at most {MAX_KEYS_PER_NAMESPACE} keys may be asked for at once")
        for key in keys:
            check_name("key", key)
        owner = await self._owner(profile)
        entry = self._cache.get(owner, namespace) if self._cached(owner) else None
        if entry is None:
            entry = await self._load(owner, namespace)
        if not keys:
            return dict(entry)
        return {key: entry[key] for key in keys if key in entry}

    async def _load(self, owner: str | None, namespace: str) -> dict[str, tuple[str, Any]]:
        if not self._cached(owner):
            return await self._read(owner, namespace)
        # Under the lock, so that a write cannot land between this read and the cache
        # fill (it would be lost from the copy).
        async with self._namespace_lock(owner, namespace):
            return await self._held(owner, namespace)

    async def _held(self, owner: str | None, namespace: str) -> dict[str, tuple[str, Any]]:
        """The namespace from the cache, else read (and cached where :meth:`_cached`);
        the lock must be held."""
        if not self._cached(owner):
            return await self._read(owner, namespace)
        entry = self._cache.get(owner, namespace)
        if entry is None:
            entry = await self._read(owner, namespace)
            self._cache.put(owner, namespace, entry)
        return entry

    async def _read(self, owner: str | None, namespace: str) -> dict[str, tuple[str, Any]]:
        with _known_profile(owner):
            found = await self._db.values.get_values(owner, namespace, [])
        return {key: (typed.value_type, typed.value) for key, typed in found.items()}

    async def set_value(
        self, profile: str, namespace: str, key: str, value_type: str, value: Any
    ) -> None:
        """Store ``value`` (JSON-able) with its type tag under ``namespace``/``key``."""
        check_name("namespace", namespace, reserved_prefix=True)
        check_name("key", key)
        if not isinstance(value_type, str) or not value_type or len(value_type) > MAX_TYPE_LENGTH:
            raise InvalidArgument(f"the value's type must be 1 to {MAX_TYPE_LENGTH} characters")
        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as err:
            raise InvalidArgument(f"the value cannot be stored: {err}") from None
        if len(encoded) > MAX_VALUE_BYTES:
            raise InvalidArgument(
                f"the value takes {len(encoded)} bytes encoded, more than the "
                f"{MAX_VALUE_BYTES} allowed; store large data elsewhere"
            )
        owner = await self._owner(profile)
        async with self._namespace_lock(owner, namespace):
            existing = await self._held(owner, namespace)
            if key not in existing and len(existing) >= MAX_KEYS_PER_NAMESPACE:
                raise InvalidArgument(
                    f"the namespace {namespace!r} holds {MAX_KEYS_PER_NAMESPACE} keys "
                    "already, the most it may; delete some first"
                )
            others = sum(_json_bytes(v) for k, (_t, v) in existing.items() if k != key)
            if others + len(encoded) > MAX_NAMESPACE_BYTES:
                raise InvalidArgument(
                    f"the namespace {namespace!r} would hold more than "
                    f"{MAX_NAMESPACE_BYTES // (1024 * 1024)} MiB of values; delete some "
                    "first or use another namespace"
                )
            with _known_profile(owner):
                await self._db.values.set_value(owner, namespace, key, value_type, value)
            self._cache.set(owner, namespace, key, value_type, value)

    async def delete_value(self, profile: str, namespace: str, key: str) -> None:
        """Remove ``namespace``/``key``.

        Raises:
            NotFound: nothing is stored there.
        """
        check_name("namespace", namespace)
        check_name("key", key)
        owner = await self._owner(profile)
        async with self._namespace_lock(owner, namespace):
            with _known_profile(owner):
                deleted = await self._db.values.delete_value(owner, namespace, key)
            self._cache.delete(owner, namespace, key)
        if not deleted:
            raise NotFound(f"no value {namespace}/{key} for {owner or GLOBAL}")
