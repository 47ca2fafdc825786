"""The records that cross to frontends, typed.

Every bridge turns these into its own form (D-Bus ``a{sv}`` dictionaries); their keys
are the contract docs/dbus-api.md documents. They are plain dictionaries at run time.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class ItemRecord(TypedDict):
    """One pubsub item as GetItems and ItemsEvent give it.

    ``xml`` is the ``<item>`` element in the pubsub namespace; ``parsed`` (JSON text) is
    there when the node's analyser has a parser and it parsed the item.
    """

    id: str
    publisher: str
    xml: str
    parsed: NotRequired[str]


class ItemsMetadata(TypedDict):
    """The paging metadata of a GetItems answer (see docs/dbus-api.md)."""

    from_cache: bool
    complete: bool
    rsm_first: NotRequired[str]
    rsm_last: NotRequired[str]
    rsm_count: NotRequired[int]
    cache_age: NotRequired[float]


class SearchHit(ItemRecord):
    """An item found by Cache.Search, with where it is cached and when it was stored.

    ``next_offset`` is on the last hit of an answer cut at the reply bound only: the
    ``offset`` that asks for the hits after it.
    """

    profile: str
    service: str
    node: str
    created: float
    updated: float
    next_offset: NotRequired[int]


class NodeState(TypedDict):
    """A node's cache state (Cache.GetNodeState)."""

    state: str
    analyser: str
    type: str
    subtype: str
    item_count: int
    synced_at: float
    current: bool
    reason: str


class ContactRecord(TypedDict):
    """A roster entry (Contacts.List, ContactChanged); ``removed`` only in signals."""

    jid: str
    name: str
    groups: list[str]
    subscription: str
    pending_out: bool
    pending_in: bool
    removed: NotRequired[bool]


class SubscriptionRequestRecord(TypedDict):
    """A presence subscription request waiting for an answer (Contacts.ListRequests)."""

    jid: str
    message: str
    received: float
