"""Contacts: rosters, pending presence subscription requests, the cache's subscriptions.

Each profile's roster is stored so that frontends can list contacts while the account is
offline, and so that a session can send the roster version it holds (XEP-0237) and
receive only the changes. A presence subscription request is stored because it waits
for a person's answer, which may come after a restart. The pubsub subscriptions the
cache made for itself are kept apart from the user's, so that the cache only ever undoes
what it did itself.

Every row belongs to a profile (ON DELETE CASCADE): deleting the profile removes them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.models import (
    CacheSubscription,
    Profile,
    Roster,
    RosterItem,
    SubscriptionRequest,
)
from roost.storage.profiles import Store, affected_rows
from roost.storage.records import (
    CacheSubscriptionRecord,
    RosterChange,
    RosterEntry,
    RosterRemoval,
    SubscriptionRequestRecord,
    check_subscription,
)

#: Rows deleted by one statement when a whole roster is replaced (well under SQLite's
#: limit of bound parameters).
_WRITE_CHUNK = 500
#: Contacts past which a roster write is too long to run on the event loop's thread
#: (about a millisecond for this many).
LARGE_WRITE_ROWS = 100


async def _profile_id(session: AsyncSession, profile: str) -> int:
    return await session.run_sync(_profile_id_in, profile)


def _profile_id_in(session: Session, profile: str) -> int:
    profile_id = Store.profile_id_in(session, profile)
    assert profile_id is not None  # a name always resolves to an id
    return profile_id


def _normalised(entry: RosterEntry) -> RosterEntry:
    """``entry`` with its groups as a tuple, once checked.

    Records read back carry a tuple: a caller that passed a list then still finds the
    stored entry equal to its own.

    Raises:
        ValueError: an unknown subscription state, or groups that are not strings.
    """
    check_subscription(entry.subscription)
    # Typed as a tuple of strings but read as anything: a caller may pass a list, or a
    # bare string, which is a sequence too and would be stored one group per character.
    groups: Sequence[object] = entry.groups
    if isinstance(groups, str) or not all(isinstance(group, str) for group in groups):
        raise ValueError(f"the groups of {entry.jid!r} must be a sequence of strings")
    return dataclasses.replace(entry, groups=tuple(cast(Sequence[str], groups)))


def _entry(row: RosterItem) -> RosterEntry:
    return RosterEntry(
        jid=row.jid,
        name=row.name,
        groups=tuple(row.groups),
        subscription=row.subscription,
        pending_out=row.pending_out,
    )


def _sorted(entries: Iterable[RosterEntry]) -> list[RosterEntry]:
    # Sorted here rather than in SQL: a server database's collation could order JIDs
    # otherwise than Python, which the service layer sorts with.
    return sorted(entries, key=lambda entry: entry.jid)


def _item_values(profile_id: int, entry: RosterEntry, now: float) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "jid": entry.jid,
        "name": entry.name,
        "groups": list(entry.groups),
        "subscription": entry.subscription,
        "pending_out": entry.pending_out,
        "updated": now,
    }


def _update_item(row: RosterItem, entry: RosterEntry, now: float) -> None:
    # An unchanged row is left alone, "updated" included: the whole roster comes again
    # at each session start without versioning, and then only what changed is written.
    if _entry(row) == entry:
        return
    row.name = entry.name
    # A new list, not an in-place change: the JSON column only sees assignments.
    row.groups = list(entry.groups)
    row.subscription = entry.subscription
    row.pending_out = entry.pending_out
    row.updated = now


def _set_version(session: Session, profile_id: int, version: str | None) -> None:
    row = session.get(Roster, profile_id)
    if row is None:
        session.add(Roster(profile_id=profile_id, version=version))
    else:
        row.version = version


def _delete_items(session: Session, row_ids: Sequence[int]) -> None:
    # Many rows a statement rather than one a row through the unit of work: a first
    # roster of 5,000 contacts is stored in a quarter of the time.
    for start in range(0, len(row_ids), _WRITE_CHUNK):
        session.execute(
            delete(RosterItem)
            .where(RosterItem.id.in_(row_ids[start : start + _WRITE_CHUNK]))
            .execution_options(synchronize_session=False)
        )


@stores_complete_on_cancel
class RosterStore(Store):
    """Each profile's roster and the presence subscription requests waiting for it."""

    async def get_roster(self, profile: str) -> tuple[str | None, list[RosterEntry]]:
        """A profile's roster as stored.

        Returns:
            The roster version last received (None when the server gave none, or no
            roster was stored yet) and the contacts, sorted by JID.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("get_roster", write=False) as session:
            profile_id = await _profile_id(session, profile)
            version = await session.scalar(
                select(Roster.version).where(Roster.profile_id == profile_id)
            )
            rows = await session.scalars(
                select(RosterItem).where(RosterItem.profile_id == profile_id)
            )
            return version, _sorted(_entry(row) for row in rows)

    async def load_rosters(self) -> dict[str, tuple[str | None, list[RosterEntry]]]:
        """Every stored roster, for the service's start.

        Returns:
            By profile name, each profile that has a roster version or contacts stored:
            its version (None when it has none) and its contacts, sorted by JID.
        """
        async with self.transaction("load_rosters", write=False) as session:
            versions = await session.execute(
                select(Profile.name, Roster.version).join(Profile, Roster.profile_id == Profile.id)
            )
            found: dict[str, tuple[str | None, list[RosterEntry]]] = {
                name: (version, []) for name, version in versions
            }
            items = await session.execute(
                select(Profile.name, RosterItem).join(Profile, RosterItem.profile_id == Profile.id)
            )
            for name, row in items:
                found.setdefault(name, (None, []))[1].append(_entry(row))
            return {
                name: (version, _sorted(entries))
                for name, (version, entries) in sorted(found.items())
            }

    async def replace_roster(
        self, profile: str, version: str | None, entries: Sequence[RosterEntry]
    ) -> None:
        """Store a whole roster as the server sent it, in one transaction.

        Afterwards the profile's roster is exactly ``entries``: contacts not among them
        are removed. Where two entries have the same JID, the last one is kept.

        Args:
            profile: the profile's name.
            version: the roster's version, None when the server gave none (the stored
                version is then cleared).
            entries: every contact of the roster.

        Raises:
            RowNotFound: no profile has that name.
            ValueError: an entry has an unknown subscription state or malformed groups.
        """
        wanted = {entry.jid: entry for entry in map(_normalised, entries)}
        now = time.time()

        def work(session: Session) -> None:
            profile_id = _profile_id_in(session, profile)
            _set_version(session, profile_id, version)
            rows = session.scalars(select(RosterItem).where(RosterItem.profile_id == profile_id))
            stored = {row.jid: row for row in rows}
            _delete_items(session, [row.id for jid, row in stored.items() if jid not in wanted])
            new = [
                _item_values(profile_id, entry, now)
                for jid, entry in wanted.items()
                if jid not in stored
            ]
            if new:
                session.execute(insert(RosterItem), new)
            for jid, row in stored.items():
                entry = wanted.get(jid)
                if entry is not None:
                    _update_item(row, entry, now)

        await self.write(
            "replace_roster", work, again_on_conflict=True, large=len(wanted) > LARGE_WRITE_ROWS
        )

    async def upsert_contact(
        self, profile: str, entry: RosterEntry, version: str | None = None
    ) -> None:
        """Store one contact, added or changed (a roster push).

        Args:
            profile: the profile's name.
            entry: the contact as it is now.
            version: the roster version the push carried; None leaves the stored version
                as it is.

        Raises:
            RowNotFound: no profile has that name.
            ValueError: the entry has an unknown subscription state or malformed groups.
        """
        await self.apply_changes(profile, [entry], version)

    async def remove_contact(self, profile: str, jid: str, version: str | None = None) -> bool:
        """Remove a contact from the roster (a push with ``subscription='remove'``).

        Args:
            profile: the profile's name.
            jid: the contact's bare JID.
            version: the roster version the push carried, stored even when the contact
                was not there; None leaves the stored version as it is.

        Returns:
            True when the contact was in the roster.

        Raises:
            RowNotFound: no profile has that name.
        """
        (found,) = await self.apply_changes(profile, [RosterRemoval(jid)], version)
        return found

    async def apply_changes(
        self, profile: str, changes: Sequence[RosterChange], version: str | None = None
    ) -> list[bool]:
        """Store the changes of one or more roster pushes, in order, in one transaction.

        Pushes that arrive while a write is under way are stored together: one
        transaction's cost, whatever their number, so that a burst of roster changes
        does not queue one write after another.

        Args:
            profile: the profile's name.
            changes: contacts added or changed, and contacts removed, in the order the
                pushes gave them.
            version: the roster version the last push carried; None leaves the stored
                version as it is.

        Returns:
            For each change, whether the contact was in the roster just before it.

        Raises:
            RowNotFound: no profile has that name.
            ValueError: an entry has an unknown subscription state or malformed groups.
        """
        changes = [
            change if isinstance(change, RosterRemoval) else _normalised(change)
            for change in changes
        ]
        now = time.time()

        def work(session: Session) -> list[bool]:
            profile_id = _profile_id_in(session, profile)
            if version is not None:
                _set_version(session, profile_id, version)
            jids = sorted({change.jid for change in changes})
            stored: dict[str, RosterItem] = {}
            for start in range(0, len(jids), _WRITE_CHUNK):
                rows = session.scalars(
                    select(RosterItem).where(
                        RosterItem.profile_id == profile_id,
                        RosterItem.jid.in_(jids[start : start + _WRITE_CHUNK]),
                    )
                )
                stored.update((row.jid, row) for row in rows)
            # The contacts as the changes leave them, in memory first: a contact added
            # then removed in the same batch is never written.
            final: dict[str, RosterEntry | None] = {jid: _entry(row) for jid, row in stored.items()}
            found = []
            for change in changes:
                found.append(final.get(change.jid) is not None)
                final[change.jid] = None if isinstance(change, RosterRemoval) else change
            _delete_items(session, [row.id for jid, row in stored.items() if final[jid] is None])
            new = [
                _item_values(profile_id, entry, now)
                for jid, entry in final.items()
                if entry is not None and jid not in stored
            ]
            if new:
                session.execute(insert(RosterItem), new)
            for jid, row in stored.items():
                entry = final[jid]
                if entry is not None:
                    _update_item(row, entry, now)
            return found

        return await self.write(
            "apply_changes", work, again_on_conflict=True, large=len(changes) > LARGE_WRITE_ROWS
        )

    async def add_subscription_request(
        self, profile: str, jid: str, message: str, received: float
    ) -> bool:
        """Store a request to see the profile's presence, until it is answered.

        A request from a JID that already waits keeps its ``received`` time (it has been
        waiting since then) and takes the new message.

        Args:
            profile: the profile's name.
            jid: the requester's bare JID.
            message: the requester's text, empty when none.
            received: when the request arrived (seconds since the epoch).

        Returns:
            True when no request from that JID was waiting.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> bool:
            profile_id = _profile_id_in(session, profile)
            row = session.scalar(
                select(SubscriptionRequest).where(
                    SubscriptionRequest.profile_id == profile_id,
                    SubscriptionRequest.jid == jid,
                )
            )
            if row is not None:
                row.message = message
                return False
            session.add(
                SubscriptionRequest(
                    profile_id=profile_id, jid=jid, message=message, received=received
                )
            )
            return True

        return await self.write("add_subscription_request", work, again_on_conflict=True)

    async def list_subscription_requests(self, profile: str) -> list[SubscriptionRequestRecord]:
        """The requests waiting for the profile's answer, oldest first.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("list_subscription_requests", write=False) as session:
            profile_id = await _profile_id(session, profile)
            rows = await session.execute(
                select(
                    SubscriptionRequest.jid,
                    SubscriptionRequest.message,
                    SubscriptionRequest.received,
                )
                .where(SubscriptionRequest.profile_id == profile_id)
                .order_by(SubscriptionRequest.received, SubscriptionRequest.id)
            )
            return [
                SubscriptionRequestRecord(jid=jid, message=message, received=received)
                for jid, message, received in rows
            ]

    async def delete_subscription_request(self, profile: str, jid: str) -> bool:
        """Forget a request, once answered (or withdrawn).

        Returns:
            True when a request from that JID was waiting.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> bool:
            result = session.execute(
                delete(SubscriptionRequest)
                .where(
                    SubscriptionRequest.profile_id == _profile_id_in(session, profile),
                    SubscriptionRequest.jid == jid,
                )
                .execution_options(synchronize_session=False)
            )
            return affected_rows(result) > 0

        return await self.write("delete_subscription_request", work)


@stores_complete_on_cancel
class CacheSubscriptionStore(Store):
    """The pubsub subscriptions the cache made for itself, to keep nodes current."""

    async def record_subscription(self, profile: str, service: str, node: str, subid: str) -> None:
        """Record that the cache subscribed ``profile`` to a node.

        A subscription already recorded for that node takes the new ``subid`` and keeps
        its ``created`` time.

        Args:
            profile: the profile's name.
            service: the pubsub service's JID.
            node: the node's name.
            subid: the server's subscription id, empty when it gave none.

        Raises:
            RowNotFound: no profile has that name.
        """
        now = time.time()

        def work(session: Session) -> None:
            profile_id = _profile_id_in(session, profile)
            row = session.scalar(
                select(CacheSubscription).where(
                    CacheSubscription.profile_id == profile_id,
                    CacheSubscription.service == service,
                    CacheSubscription.node == node,
                )
            )
            if row is None:
                session.add(
                    CacheSubscription(
                        profile_id=profile_id,
                        service=service,
                        node=node,
                        subid=subid,
                        created=now,
                    )
                )
            else:
                row.subid = subid

        await self.write("record_subscription", work, again_on_conflict=True)

    async def list_subscriptions(
        self, profile: str | None = None, service: str | None = None, node: str | None = None
    ) -> list[CacheSubscriptionRecord]:
        """The cache's subscriptions, each filter applied when it is not None.

        Args:
            profile: only those of the profile with that name.
            service: only those on that pubsub service.
            node: only those to nodes of that name.

        Returns:
            The subscriptions, ordered by profile name, service and node.

        Raises:
            RowNotFound: no profile has that name.
        """
        query = (
            select(CacheSubscription, Profile.name)
            .join(Profile, CacheSubscription.profile_id == Profile.id)
            .order_by(Profile.name, CacheSubscription.service, CacheSubscription.node)
        )
        if service is not None:
            query = query.where(CacheSubscription.service == service)
        if node is not None:
            query = query.where(CacheSubscription.node == node)
        async with self.transaction("list_subscriptions", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            if profile_id is not None:
                query = query.where(CacheSubscription.profile_id == profile_id)
            rows = await session.execute(query)
            return [
                CacheSubscriptionRecord(
                    profile=name,
                    service=row.service,
                    node=row.node,
                    subid=row.subid,
                    created=row.created,
                )
                for row, name in rows
            ]

    async def forget_subscription(self, profile: str, service: str, node: str) -> bool:
        """Forget a subscription of the cache (once it unsubscribed, or learnt it is gone).

        Returns:
            True when it was recorded.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> bool:
            result = session.execute(
                delete(CacheSubscription)
                .where(
                    CacheSubscription.profile_id == _profile_id_in(session, profile),
                    CacheSubscription.service == service,
                    CacheSubscription.node == node,
                )
                .execution_options(synchronize_session=False)
            )
            return affected_rows(result) > 0

        return await self.write("forget_subscription", work)
