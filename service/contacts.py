"""Contacts: each profile's roster, kept in the database and current, and the presence
subscription requests that wait for the person's answer.

The roster is read when a session starts, before the first presence leaves (with roster
versioning, XEP-0237, where the server offers it: then only the changes come, as pushes),
stored per profile, and kept current by the server's pushes. It also decides whose PEP
nodes the cache can keep current (:meth:`ContactsService.presence_subscription`).

Roost never answers a subscription request by itself: slixmpp would approve every one
unless told otherwise, which lets anyone see the account's presence and its
presence-restricted PEP nodes (microblog, avatar, OMEMO device lists on Prosody). A
request is stored, announced (:class:`SubscriptionRequested`) and waits for
:meth:`ContactsService.authorize`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slixmpp import JID
from slixmpp.jid import InvalidJID

from roost.service.errors import InvalidArgument, NotFound
from roost.service.events import ContactChanged, EventHub, SubscriptionRequested
from roost.service.profiles import ProfileService
from roost.service.pubsub.protocol import send_iq
from roost.service.records import ContactRecord, SubscriptionRequestRecord
from roost.service.safe_xml import check_xml_text
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database, RosterChange, RosterEntry, RosterRemoval

log = logging.getLogger(__name__)

NS_ROSTER = "jabber:iq:roster"
SUBSCRIPTIONS = ("none", "to", "from", "both")
ADD_OPTIONS = ("name", "groups", "subscribe")
MAX_NAME_LENGTH = 1023
MAX_GROUPS = 100
MAX_GROUP_LENGTH = 1023
# How long the roster request at session start may take before the session goes on
# with the stored roster (a slow server must not hold the session back for ever).
ROSTER_TIMEOUT = 30.0
# A subscription request's status text is shown to a person: keep it short.
MAX_REQUEST_MESSAGE = 1024


def check_contact_jid(jid: str) -> str:
    """A contact's JID as a bare JID string.

    Raises:
        InvalidArgument: not a JID, or a full JID (a roster holds bare JIDs).
    """
    if not isinstance(jid, str) or not jid:
        raise InvalidArgument("a contact's JID must be a non-empty string (user@example.org)")
    try:
        parsed = JID(jid)
    except InvalidJID as exc:
        raise InvalidArgument(f"{jid!r} is not a valid JID: {exc}") from None
    if parsed.resource:
        raise InvalidArgument(f"{jid!r} is a full JID; a contact is a bare JID (no /resource)")
    return str(parsed.bare)


@dataclass
class _Roster:
    """A profile's roster as stored, in memory."""

    version: str | None = None
    entries: dict[str, RosterEntry] = field(default_factory=dict)
    requests: set[str] = field(default_factory=set)


class ContactsService:
    """Rosters and presence subscription requests of every profile.

    Args:
        db: the database (rosters and requests are stored there).
        events: where ContactChanged and SubscriptionRequested are announced.
        profiles: resolves profile names (``""``: the default profile).
        sessions: the XMPP sessions; every client they create is set up here.
    """

    def __init__(
        self,
        db: Database,
        events: EventHub,
        profiles: ProfileService,
        sessions: SessionManager,
    ) -> None:
        self._db = db
        self._events = events
        self._profiles = profiles
        self._sessions = sessions
        self._rosters: dict[str, _Roster] = {}
        # Stanzas of one profile are handled in arrival order: a push must not overtake
        # the one before it.
        self._locks: dict[str, asyncio.Lock] = {}
        # Each profile's roster pushes not yet stored, oldest first, with their versions:
        # stored together by the first of their tasks to get the lock.
        self._pushes: dict[str, list[tuple[builtins.list[ET.Element], str | None]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        sessions.on_client(self._attach)

    async def load(self) -> None:
        """Read every stored roster and pending request into memory (at start)."""
        for profile, (version, entries) in (await self._db.roster.load_rosters()).items():
            roster = self._roster(profile)
            roster.version = version
            roster.entries = {entry.jid: entry for entry in entries}
        for name in await self._profiles.list():
            requests = await self._db.roster.list_subscription_requests(name)
            if requests:
                self._roster(name).requests = {request.jid for request in requests}

    async def reload_profile(self, profile: str) -> None:
        """Read one profile's roster and pending requests again (its lease was just
        taken: the daemon that served it before may have changed them since :meth:`load`)."""
        version, entries = await self._db.roster.get_roster(profile)
        requests = await self._db.roster.list_subscription_requests(profile)
        roster = self._roster(profile)
        roster.version = version
        roster.entries = {entry.jid: entry for entry in entries}
        roster.requests = {request.jid for request in requests}

    def forget_profile(self, profile: str) -> None:
        """Drop a deleted profile's roster from memory (the database cascades)."""
        self._rosters.pop(profile, None)

    def _roster(self, profile: str) -> _Roster:
        return self._rosters.setdefault(profile, _Roster())

    # -- what other services ask ----------------------------------------------------------

    def presence_subscription(self, profile: str, jid: str) -> str:
        """The profile's subscription to ``jid``'s presence: ``none``, ``to``, ``from`` or
        ``both`` (``to`` and ``both`` bring the contact's PEP notifications)."""
        entry = self._roster(profile).entries.get(str(JID(jid).bare))
        return entry.subscription if entry is not None else "none"

    def contacts_with_presence(self, profile: str) -> set[str]:
        """The bare JIDs whose presence (and so PEP notifications) the profile receives."""
        return {
            jid
            for jid, entry in self._roster(profile).entries.items()
            if entry.subscription in ("to", "both")
        }

    # -- Contacts interface ---------------------------------------------------------------

    async def list(self, profile: str) -> list[ContactRecord]:
        """The profile's roster, sorted by JID (also while it is offline: as stored)."""
        name = await self._profiles.resolve(profile)
        roster = self._roster(name)
        return [self._record(roster, entry) for _jid, entry in sorted(roster.entries.items())]

    async def list_requests(self, profile: str) -> builtins.list[SubscriptionRequestRecord]:
        """The presence subscription requests waiting for an answer, oldest first: each
        ``jid``, ``message`` (the requester's text, maybe empty) and ``received``."""
        name = await self._profiles.resolve(profile)
        return [
            {"jid": request.jid, "message": request.message, "received": request.received}
            for request in await self._db.roster.list_subscription_requests(name)
        ]

    async def add(self, profile: str, jid: str, options: Mapping[str, Any]) -> None:
        """Add ``jid`` to the roster (or change its name and groups), and unless
        ``options["subscribe"]`` is false, ask for its presence.

        Raises:
            InvalidArgument: a bad JID, the account's own JID, or a bad option.
            NotConnected: the profile is offline.
            XmppError: the server refused the roster change.
        """
        name = await self._profiles.resolve(profile)
        contact = check_contact_jid(jid)
        unknown = sorted(set(options) - set(ADD_OPTIONS))
        if unknown:
            raise InvalidArgument(
                f"unknown Add option(s) {', '.join(unknown)}; known: {', '.join(ADD_OPTIONS)}"
            )
        nickname = options.get("name", "")
        if not isinstance(nickname, str) or len(nickname) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"the name option must be a string of at most {MAX_NAME_LENGTH}")
        check_xml_text(nickname, "the name option")
        groups = _check_groups(options.get("groups", []))
        subscribe = options.get("subscribe", True)
        if not isinstance(subscribe, bool):
            raise InvalidArgument("the subscribe option must be a boolean")
        client = self._sessions.client(name)
        if contact == str(client.boundjid.bare):
            raise InvalidArgument(f"{contact} is this profile's own account, not a contact")
        item = ET.Element(f"{{{NS_ROSTER}}}item", jid=contact)
        if nickname:
            item.set("name", nickname)
        for group in groups:
            ET.SubElement(item, f"{{{NS_ROSTER}}}group").text = group
        await self._roster_set(client, item)
        await self._settle(name, item)
        if subscribe:
            client.send_presence(pto=contact, ptype="subscribe")

    async def remove(self, profile: str, jid: str) -> None:
        """Remove ``jid`` from the roster (the server also cancels the subscriptions both
        ways).

        Raises:
            NotFound: ``jid`` is not in the roster.
            NotConnected: the profile is offline.
        """
        name = await self._profiles.resolve(profile)
        contact = check_contact_jid(jid)
        client = self._sessions.client(name)
        if contact not in self._roster(name).entries:
            raise NotFound(f"{contact} is not in the roster of {name!r}; List() gives it")
        item = ET.Element(f"{{{NS_ROSTER}}}item", jid=contact, subscription="remove")
        await self._roster_set(client, item)
        await self._settle(name, item)

    async def authorize(self, profile: str, jid: str, accept: bool) -> None:
        """Answer ``jid``'s request to see the profile's presence: ``accept`` approves
        it, otherwise it is refused. Refusing also revokes a subscription granted before.

        Raises:
            NotFound: no request from ``jid`` waits, and (to refuse) it has no subscription.
            NotConnected: the profile is offline.
        """
        name = await self._profiles.resolve(profile)
        contact = check_contact_jid(jid)
        if not isinstance(accept, bool):
            raise InvalidArgument("accept must be a boolean")
        client = self._sessions.client(name)
        roster = self._roster(name)
        granted = self.presence_subscription(name, contact) in ("from", "both")
        if contact not in roster.requests and not (granted and not accept):
            raise NotFound(
                f"no presence subscription request from {contact} waits for an answer"
                + ("" if accept else f", and {contact} does not see this account's presence")
            )
        client.send_presence(pto=contact, ptype="subscribed" if accept else "unsubscribed")
        await self._drop_request(name, contact)
        log.info(
            "%s: %s the presence subscription of %s",
            name,
            "approved" if accept else "refused",
            contact,
        )

    # -- the XMPP side ----------------------------------------------------------------

    def _attach(self, profile: str, client: RoostClient) -> None:
        # RoostClient neither approves nor refuses requests: they wait for Authorize.
        client.session_steps.append(lambda c: self._fetch_roster(profile, c))
        client.add_event_handler("roster_update", lambda iq: self._on_roster_stanza(profile, iq))
        client.add_event_handler(
            "roster_subscription_request",
            lambda presence: self._spawn(profile, self._on_request(profile, presence)),
        )
        client.add_event_handler(
            "presence_unsubscribe",
            lambda presence: self._spawn(
                profile, self._drop_request(profile, str(presence["from"].bare))
            ),
        )

    async def _roster_set(self, client: RoostClient, item: ET.Element) -> None:
        query = ET.Element(f"{{{NS_ROSTER}}}query")
        query.append(item)
        await send_iq(client, "set", "", query)

    async def _settle(self, profile: str, item: ET.Element) -> None:
        """After a roster change Roost made: make the stored roster show it when the call
        returns (read your writes), whether the server's push came before its answer
        (handled by then, in order) or comes after it (applied here first; the push
        then changes nothing)."""
        lock = self._locks.setdefault(profile, asyncio.Lock())
        async with lock:
            roster = self._roster(profile)
            jid = item.get("jid", "")
            current = roster.entries.get(jid)
            if item.get("subscription") == "remove":
                if current is not None:
                    await self._apply_items(profile, [item], None)
                return
            wanted = _entry(item)
            if wanted is None:
                return
            if current is None or (current.name, current.groups) != (wanted.name, wanted.groups):
                # Name and groups as set; the subscription as it was (none for a new one).
                merged = ET.Element(
                    item.tag,
                    dict(item.attrib),
                    subscription=current.subscription if current else "none",
                )
                if current is not None and current.pending_out:
                    merged.set("ask", "subscribe")
                merged.extend(list(item))
                await self._apply_items(profile, [merged], None)

    async def _fetch_roster(self, profile: str, client: RoostClient) -> None:
        """Ask for the roster before the first presence: the stored version when the
        server does roster versioning, so that an unchanged roster costs nothing."""
        query = ET.Element(f"{{{NS_ROSTER}}}query")
        versioning = "rosterver" in client.features
        if versioning:
            query.set("ver", self._roster(profile).version or "")
        reply = await send_iq(client, "get", "", query, wait=ROSTER_TIMEOUT)
        full = reply.find(f"{{{NS_ROSTER}}}query")
        if full is None:
            # Versioned and unchanged, or the changes follow as pushes (XEP-0237).
            log.debug("%s: the stored roster is current", profile)
            return
        version = full.get("ver") if versioning else None
        entries = [e for e in (_entry(item) for item in full) if e is not None]
        await self._replace(profile, version, entries)

    async def _replace(
        self, profile: str, version: str | None, entries: Sequence[RosterEntry]
    ) -> None:
        roster = self._roster(profile)
        await self._db.roster.replace_roster(profile, version, entries)
        old, roster.entries = roster.entries, {entry.jid: entry for entry in entries}
        roster.version = version
        for jid in sorted(set(old) - set(roster.entries)):
            self._announce(profile, roster, old[jid], removed=True)
        for jid, entry in sorted(roster.entries.items()):
            if old.get(jid) != entry:
                self._announce(profile, roster, entry)
                await self._answered_elsewhere(profile, entry)
        log.info("%s: roster of %d contacts received", profile, len(entries))

    def _on_roster_stanza(self, profile: str, iq: Any) -> None:
        # Results are the session start's own request, handled there; pushes come as sets
        # (slixmpp refuses pushes not from the account itself before this sees them).
        if iq["type"] != "set":
            return
        query = iq.xml.find(f"{{{NS_ROSTER}}}query")
        if query is None:
            return
        self._pushes.setdefault(profile, []).append((list(query), query.get("ver") or None))
        self._spawn(profile, self._apply_pushes(profile))

    async def _apply_pushes(self, profile: str) -> None:
        # A push that waited for the lock behind a write is stored with every push that
        # came meanwhile, in one transaction: a burst of changes costs one write, not a
        # queue of them. The later tasks then find nothing left.
        pushes = self._pushes.pop(profile, [])
        if not pushes:
            return
        versions = [version for _, version in pushes if version is not None]
        items = [item for push_items, _ in pushes for item in push_items]
        await self._apply_items(profile, items, versions[-1] if versions else None)

    async def _apply_items(
        self, profile: str, items: builtins.list[ET.Element], version: str | None
    ) -> None:
        """Apply roster pushes' items to the stored roster, then announce each change."""
        changes: builtins.list[RosterChange] = []
        for item in items:
            if item.get("subscription") == "remove":
                try:
                    changes.append(RosterRemoval(str(JID(item.get("jid", "")).bare)))
                except InvalidJID:
                    log.warning("%s: a roster push removing an invalid JID was ignored", profile)
                continue
            entry = _entry(item)
            if entry is not None:
                changes.append(entry)
        if not changes and version is None:
            return
        await self._db.roster.apply_changes(profile, changes, version)
        roster = self._roster(profile)
        for change in changes:
            if isinstance(change, RosterRemoval):
                old = roster.entries.pop(change.jid, None)
                if old is not None:
                    self._announce(profile, roster, old, removed=True)
            elif roster.entries.get(change.jid) != change:
                roster.entries[change.jid] = change
                self._announce(profile, roster, change)
                await self._answered_elsewhere(profile, change)
        if version is not None:
            roster.version = version

    async def _answered_elsewhere(self, profile: str, entry: RosterEntry) -> None:
        # Another client of the account approved the request: it waits no more.
        if entry.subscription in ("from", "both"):
            await self._drop_request(profile, entry.jid)

    async def _on_request(self, profile: str, presence: Any) -> None:
        jid = str(presence["from"].bare)
        if self.presence_subscription(profile, jid) in ("from", "both"):
            return  # answered already; a server re-sending it is mistaken
        message = str(presence["status"] or "")[:MAX_REQUEST_MESSAGE]
        new = await self._db.roster.add_subscription_request(profile, jid, message, time.time())
        roster = self._roster(profile)
        roster.requests.add(jid)
        if new:
            log.info("%s: %s asks to see this account's presence", profile, jid)
            self._events.publish(SubscriptionRequested(profile, jid, message))
            entry = roster.entries.get(jid)
            if entry is not None:
                self._announce(profile, roster, entry)

    async def _drop_request(self, profile: str, jid: str) -> None:
        roster = self._roster(profile)
        if jid not in roster.requests:
            return
        roster.requests.discard(jid)
        await self._db.roster.delete_subscription_request(profile, jid)
        entry = roster.entries.get(jid)
        if entry is not None:
            self._announce(profile, roster, entry)

    def _announce(
        self, profile: str, roster: _Roster, entry: RosterEntry, *, removed: bool = False
    ) -> None:
        contact = self._record(roster, entry)
        contact["removed"] = removed
        self._events.publish(ContactChanged(profile, contact))

    @staticmethod
    def _record(roster: _Roster, entry: RosterEntry) -> ContactRecord:
        return {
            "jid": entry.jid,
            "name": entry.name,
            "groups": list(entry.groups),
            "subscription": entry.subscription,
            "pending_out": entry.pending_out,
            "pending_in": entry.jid in roster.requests,
        }

    def _spawn(self, profile: str, coro: Any) -> None:
        lock = self._locks.setdefault(profile, asyncio.Lock())
        task = asyncio.get_running_loop().create_task(self._in_order(lock, coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _in_order(lock: asyncio.Lock, coro: Any) -> None:
        # Tasks start in creation order and the lock wakes waiters first come, first
        # served: stanzas are applied in the order they arrived.
        async with lock:
            try:
                await coro
            except Exception:
                log.exception("handling a roster or presence stanza failed")

    async def close(self) -> None:
        """Wait for the stanzas being handled to be stored."""
        await asyncio.gather(*self._background, return_exceptions=True)


def _check_groups(groups: Any) -> list[str]:
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
        raise InvalidArgument("the groups option must be a list of strings")
    if len(groups) > MAX_GROUPS:
        raise InvalidArgument(f"a contact can be in at most {MAX_GROUPS} groups")
    for group in groups:
        if not group or len(group) > MAX_GROUP_LENGTH:
            raise InvalidArgument(
                f"a group name must have 1 to {MAX_GROUP_LENGTH} characters, not {group!r}"
            )
        check_xml_text(group, "a group name")
    return sorted(set(groups))


def _entry(item: ET.Element) -> RosterEntry | None:
    """A roster item as stored; None for an item that is not one (bad JID or state)."""
    if item.tag != f"{{{NS_ROSTER}}}item":
        return None
    subscription = item.get("subscription", "none")
    if subscription not in SUBSCRIPTIONS:
        return None
    try:
        jid = str(JID(item.get("jid", "")).bare)
    except InvalidJID:
        return None
    if not jid:
        return None
    groups = sorted({g.text for g in item.findall(f"{{{NS_ROSTER}}}group") if g.text})
    return RosterEntry(
        jid=jid,
        name=item.get("name", ""),
        groups=tuple(groups),
        subscription=subscription,
        pending_out=item.get("ask") == "subscribe",
    )
