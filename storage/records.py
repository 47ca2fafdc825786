"""What the stores return: frozen records, detached from any session.

The service layer holds these between awaits; an ORM object would lazily load (and so
do I/O) on attribute access after its session closed, a record never does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: The states a node's synchronisation can be in (DESIGN.md, ``GetNodeState``).
NODE_STATES = frozenset({"none", "no_sync", "in_progress", "completed", "error"})


def check_node_state(state: str) -> str:
    """Return ``state`` when it is a valid node sync state.

    Raises:
        ValueError: for any other string.
    """
    if state not in NODE_STATES:
        raise ValueError(
            f"unknown node sync state {state!r} (one of {', '.join(sorted(NODE_STATES))})"
        )
    return state


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """An XMPP account as stored.

    The password is kept out of ``repr`` so that a logged record never leaks it.
    """

    id: int
    name: str
    jid: str
    password: str = field(repr=False)
    options: Mapping[str, Any]
    created: float


class TypedValue(NamedTuple):
    """A stored value with the type tag its writer gave it (a D-Bus signature, say)."""

    value_type: str
    value: Any


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A pubsub node known to the cache, with its analysis and sync state.

    ``sync_state_updated`` is when ``sync_state`` last changed, in seconds since the epoch;
    ``extra`` holds what the service layer keeps beside (an error's reason, retry counts).
    """

    id: int
    profile: str
    profile_id: int
    service: str
    name: str
    analyser: str | None
    type: str | None
    subtype: str | None
    sync_state: str
    sync_state_updated: float
    subscribed: bool
    extra: Mapping[str, Any]
