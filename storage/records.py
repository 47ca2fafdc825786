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


#: A roster item's presence subscription states (RFC 6121); "remove" is a push's
#: instruction, never a stored state.
ROSTER_SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})


def check_subscription(subscription: str) -> str:
    """Return ``subscription`` when it is a valid roster subscription state.

    Raises:
        ValueError: for any other string.
    """
    if subscription not in ROSTER_SUBSCRIPTIONS:
        raise ValueError(
            f"unknown roster subscription {subscription!r} "
            f"(one of {', '.join(sorted(ROSTER_SUBSCRIPTIONS))})"
        )
    return subscription


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


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """A contact in a profile's roster.

    Attributes:
        jid: the contact's bare JID.
        name: the name the account gave the contact, empty when none.
        groups: the roster groups the contact is in.
        subscription: ``none``, ``to`` (the profile sees the contact's presence),
            ``from`` (the contact sees the profile's) or ``both``.
        pending_out: the profile asked for the contact's presence; no answer came yet.
    """

    jid: str
    name: str = ""
    groups: tuple[str, ...] = ()
    subscription: str = "none"
    pending_out: bool = False


@dataclass(frozen=True, slots=True)
class RosterRemoval:
    """A contact a roster push removed.

    Attributes:
        jid: the contact's bare JID.
    """

    jid: str


#: One change of a roster push: a contact added or changed, or a contact removed.
RosterChange = RosterEntry | RosterRemoval


@dataclass(frozen=True, slots=True)
class SubscriptionRequestRecord:
    """Someone who asks to see a profile's presence and waits for an answer.

    Attributes:
        jid: the requester's bare JID.
        message: the requester's text, empty when none.
        received: when the first request from that JID arrived (seconds since the epoch).
    """

    jid: str
    message: str
    received: float


@dataclass(frozen=True, slots=True)
class CacheSubscriptionRecord:
    """A pubsub subscription the cache made for itself.

    Attributes:
        profile: the name of the profile that holds it.
        service: the pubsub service's JID.
        node: the node's name.
        subid: the server's subscription id, empty when it gave none.
        created: when the cache first recorded a subscription to the node (seconds
            since the epoch); recording it again, with a new subid say, keeps it.
    """

    profile: str
    service: str
    node: str
    subid: str
    created: float
