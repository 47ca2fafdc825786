"""Events the service layer announces, and the hub that delivers them.

The service layer knows nothing of D-Bus: it publishes these plain dataclasses, and each
bridge subscribes and turns them into its own notifications (D-Bus signals for the D-Bus
bridge). Delivery is synchronous and in order; a listener that raises is logged and does
not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roost.service.records import ContactRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileConnected:
    """A profile's XMPP session is up, bound to ``jid`` (full JID)."""

    profile: str
    jid: str


@dataclass(frozen=True)
class ProfileDisconnected:
    """A profile's XMPP session ended; ``reason`` says why, for a person."""

    profile: str
    reason: str


@dataclass(frozen=True)
class DefaultProfileChanged:
    """The default profile is now ``profile`` (empty: none)."""

    profile: str


@dataclass(frozen=True)
class ParamChanged:
    """A parameter was set; ``profile`` is ``@global@`` for a global one."""

    profile: str
    category: str
    name: str
    value: str


@dataclass(frozen=True)
class ItemsEvent:
    """A pubsub notification for a node, after the cache has taken it into account.

    ``kind`` is ``items``, ``retract``, ``purge`` or ``delete``; ``items`` are item
    records as GetItems returns them (``id``, ``publisher``, ``xml``, maybe ``parsed``;
    only ``id`` for a retraction).
    """

    profile: str
    service: str
    node: str
    kind: str
    items: list[dict[str, Any]] = field(default_factory=list)
    # False when items the notification named without their payload could not be
    # fetched: those items carry only what the notification said, and the cache must
    # not take them for the node's items.
    complete: bool = True


@dataclass(frozen=True)
class SyncStateChanged:
    """A cached node moved to ``state`` (``none``, ``no_sync``, ``in_progress``…)."""

    profile: str
    service: str
    node: str
    state: str


@dataclass(frozen=True)
class SyncProgress:
    """A node's sync has stored ``done`` items of ``total`` (0 when unknown)."""

    profile: str
    service: str
    node: str
    done: int
    total: int


@dataclass(frozen=True)
class ContactChanged:
    """A roster entry of ``profile`` changed; ``contact`` is the record Contacts.List
    gives (``jid``, ``name``, ``groups``, ``subscription``, ``pending_out``,
    ``pending_in``) with ``removed`` true when the contact left the roster."""

    profile: str
    contact: ContactRecord


@dataclass(frozen=True)
class SubscriptionRequested:
    """``jid`` asks to see ``profile``'s presence; it waits for an answer (Authorize)."""

    profile: str
    jid: str
    message: str = ""


Event = (
    ProfileConnected
    | ProfileDisconnected
    | DefaultProfileChanged
    | ParamChanged
    | ItemsEvent
    | SyncStateChanged
    | SyncProgress
    | ContactChanged
    | SubscriptionRequested
)
Listener = Callable[[Event], None]


class EventHub:
    """Delivers service events to every subscribed listener, in subscription order."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add ``listener``; returns a function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every listener; one listener's failure does not stop the rest."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %r", listener, event)
