"""An in-memory copy of recently used key/value namespaces.

``GetValues`` is the call frontends make most (settings read at every start, often one
key at a time); answering it from memory instead of a database round trip is what makes
it as cheap as a bare D-Bus call. Whole namespaces are cached, so "every key" requests
are answered too. Only this daemon writes a profile's values while it serves the
profile (it holds the profile's lease, see :mod:`roost.storage.leases`), and every write
goes through :class:`~roost.service.settings.SettingsService`, which updates this cache
after the database: the copy cannot go stale. Global values (``@global@``) belong to no
profile: on a database other daemons share, they are not kept here at all.

Bounded by total size (the JSON encoding of the values), least recently used first out.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

Owner = str | None
Entry = dict[str, tuple[str, Any]]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024


def _size(key: str, value_type: str, value: Any) -> int:
    return len(key) + len(value_type) + len(json.dumps(value, ensure_ascii=False))


class ValueCache:
    """Namespaces (per owner: a profile name, or None for global) and their values."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Owner, str], Entry] = OrderedDict()
        self._sizes: dict[tuple[Owner, str], dict[str, int]] = {}
        self._total = 0

    @property
    def total_bytes(self) -> int:
        """The approximate size of everything held."""
        return self._total

    def get(self, owner: Owner, namespace: str) -> Entry | None:
        """The whole namespace if held (marking it recently used), else None."""
        entry = self._entries.get((owner, namespace))
        if entry is not None:
            self._entries.move_to_end((owner, namespace))
        return entry

    def put(self, owner: Owner, namespace: str, values: Entry) -> None:
        """Hold a namespace as just read from the database."""
        self.drop(owner, namespace)
        sizes = {key: _size(key, kind, value) for key, (kind, value) in values.items()}
        self._entries[(owner, namespace)] = dict(values)
        self._sizes[(owner, namespace)] = sizes
        self._total += sum(sizes.values())
        self._shrink()

    def set(self, owner: Owner, namespace: str, key: str, value_type: str, value: Any) -> None:
        """Record a write (only where the namespace is held)."""
        entry = self._entries.get((owner, namespace))
        if entry is None:
            return
        sizes = self._sizes[(owner, namespace)]
        self._total -= sizes.get(key, 0)
        entry[key] = (value_type, value)
        sizes[key] = _size(key, value_type, value)
        self._total += sizes[key]
        self._shrink()

    def delete(self, owner: Owner, namespace: str, key: str) -> None:
        """Record a deletion."""
        entry = self._entries.get((owner, namespace))
        if entry is not None and key in entry:
            del entry[key]
            self._total -= self._sizes[(owner, namespace)].pop(key)

    def drop(self, owner: Owner, namespace: str) -> None:
        """Forget one namespace."""
        if self._entries.pop((owner, namespace), None) is not None:
            self._total -= sum(self._sizes.pop((owner, namespace)).values())

    def forget_owner(self, owner: str) -> None:
        """Forget every namespace of a profile (it was deleted)."""
        for cached_owner, namespace in [k for k in self._entries if k[0] == owner]:
            self.drop(cached_owner, namespace)

    def _shrink(self) -> None:
        while self._total > self.max_bytes and len(self._entries) > 1:
            owner, namespace = next(iter(self._entries))
            self.drop(owner, namespace)
        if self._total > self.max_bytes and self._entries:
            # A single namespace larger than the whole budget is not worth holding.
            owner, namespace = next(iter(self._entries))
            self.drop(owner, namespace)
