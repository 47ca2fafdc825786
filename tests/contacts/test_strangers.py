"""Roost listens only to the services the person chose: its own account, contacts whose
presence it receives, and nodes the account (or the cache) is subscribed to.

A stranger here is a federated pubsub service nobody chose (``evil.localhost``, an
external component of the test Prosody, see tests/fixtures/hostile.py): it sends
unsolicited notifications from its bare domain JID, which a client could not forge. They
must change nothing (no ItemsEvent, no node record, nothing to search) and make Roost
send nothing back (no subscription, no items request, no disco), since any of these would
let a stranger make an account subscribe, fetch and store what it likes.

Prosody only: the component lives there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.events import ContactChanged, ItemsEvent, SyncStateChanged
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.hostile import HostileService
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import ProsodyServer

pytestmark = pytest.mark.xmpp

MICROBLOG = "urn:xmpp:microblog:0"
COMMENTS = "urn:xmpp:microblog:0:comments/"
ATOM = "http://www.w3.org/2005/Atom"
SPAM_NODES = 200
# How long a notification that should arrive may take (the EventLog default is for syncs).
ARRIVAL = 30.0


def entry(tag: str, n: int) -> str:
    """An Atom entry, as a microblog item carries it."""
    return (
        f'<entry xmlns="{ATOM}"><id>urn:uuid:{tag}-{n}</id><title>Cheap pills {tag} {n}</title>'
        f'<content type="text">Buy now {tag} {n}</content>'
        f"<published>2026-01-01T00:00:{n % 60:02d}Z</published>"
        f"<updated>2026-01-01T00:00:{n % 60:02d}Z</updated></entry>"
    )


def query_form(item_id: str, payload: str) -> str:
    """An item as an items query returns it (the form ItemsEvent carries)."""
    return f'<item xmlns="http://jabber.org/protocol/pubsub" id="{item_id}">{payload}</item>'


def items_events(log: EventLog, service: str, node: str | None = None) -> list[ItemsEvent]:
    return [
        e for e in log.of(ItemsEvent) if e.service == service and (node is None or e.node == node)
    ]


def item_ids(events: list[ItemsEvent]) -> list[str]:
    return [str(raw["id"]) for event in events for raw in event.items]


async def wait_items_event(log: EventLog, service: str, node: str, item_id: str) -> ItemsEvent:
    event = await log.wait_for(
        lambda e: (
            isinstance(e, ItemsEvent)
            and (e.service, e.node) == (service, node)
            and any(raw["id"] == item_id for raw in e.items)
        ),
        f"the notification of {item_id} in {service}/{node}",
        limit=ARRIVAL,
    )
    assert isinstance(event, ItemsEvent)
    return event


async def test_a_strangers_events_change_nothing_and_make_roost_send_nothing(
    prosody_server: ProsodyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = prosody_server
    (me,) = unique_names("stranger", 1)
    await server.register_many([me])
    account = server.jid(me)
    caplog.set_level(logging.INFO, logger="roost")
    db = tmp_path / "roost.sqlite"
    async with (
        running_backend(db, server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        # A blog, its comment nodes, and what a service may say of them afterwards.
        evil.send_event(full, MICROBLOG, [(f"post-{n}", entry("post", n)) for n in range(5)])
        for n in range(SPAM_NODES):
            evil.send_event(full, f"{COMMENTS}spam-{n}", [(f"comment-{n}", entry("comment", n))])
        evil.send_event(full, MICROBLOG, [("bare-1", "<nothing xmlns='urn:example:x'/>")])
        evil.send_retract(full, MICROBLOG, ["post-0"])
        evil.send_purge(full, f"{COMMENTS}spam-1")
        evil.send_delete(full, f"{COMMENTS}spam-2")
        # From an address of its domain that looks like an account's PEP service.
        lookalike = f"{me}@{evil.jid}"
        evil.send_event(full, MICROBLOG, [("pep-1", entry("pep", 1))], sender=lookalike)
        await evil.round_trips(full)

        assert log.of(ItemsEvent) == []
        assert await backend.db.nodes.list_nodes(profile=me) == []
        for service, node in (
            (evil.jid, MICROBLOG),
            (evil.jid, f"{COMMENTS}spam-0"),
            (evil.jid, f"{COMMENTS}spam-{SPAM_NODES - 1}"),
            (lookalike, MICROBLOG),
        ):
            state = await backend.pubsub.get_node_state(me, service, node)
            assert state["state"] == "none", (service, node, state)
        assert await backend.pubsub.search({"profiles": [me]}) == []
        assert await backend.pubsub.search({"fts": "pills"}) == []
        # Nothing went to the stranger: no subscription, no items request, no disco.
        assert evil.received_from(account) == [], evil.described(account)

    # The drops were noticed, and logged once (with a count), not once per stanza; no
    # warning or error either, which a stranger could otherwise flood the log with.
    roost = [r for r in caplog.records if r.name.startswith("roost")]
    mentions = [r for r in roost if evil.jid in r.getMessage()]
    assert len(mentions) == 1, [r.getMessage() for r in mentions]
    loud = [r for r in roost if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


async def test_a_node_the_account_subscribed_to_is_heard_and_no_other_of_that_service(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    server = prosody_server
    (me,) = unique_names("chooser", 1)
    await server.register_many([me])
    account = server.jid(me)
    chosen, kept, other = "urn:example:chosen", "urn:example:kept", MICROBLOG
    db = tmp_path / "roost.sqlite"
    async with (
        running_backend(db, server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        evil.put_items(chosen, [("old-1", entry("old", 1))])
        evil.put_items(kept, [])
        # The person reads the node and subscribes to it (and to a second one).
        reply = await backend.pubsub.get_items(me, evil.jid, chosen, {})
        assert [item.id for item in reply.items] == ["old-1"]
        subid = await backend.pubsub.subscribe(me, evil.jid, chosen, {})
        assert subid and evil.node(chosen).subscribers == {account: subid}
        await backend.pubsub.subscribe(me, evil.jid, kept, {})

        # Another node of the same service first, then the chosen one: notifications are
        # handled in the order they arrive, so the first was dealt with when the second
        # is heard.
        evil.send_event(full, other, [("other-1", entry("other", 1))])
        evil.send_event(full, chosen, [("chosen-1", entry("chosen", 1))])
        event = await wait_items_event(log, evil.jid, chosen, "chosen-1")
        assert event.kind == "items" and event.profile == me
        assert [raw["xml"] for raw in event.items] == [query_form("chosen-1", entry("chosen", 1))]
        await evil.round_trips(full)
        assert items_events(log, evil.jid, other) == []
        sent = evil.described(account)
        assert sent and not [s for s in sent if other in s], sent
        nodes = await backend.db.nodes.list_nodes(profile=me)
        assert sorted(n.name for n in nodes) == sorted([chosen, kept])
        state = await backend.pubsub.get_node_state(me, evil.jid, other)
        assert state["state"] == "none"

        # Unsubscribed, the node is a stranger's again; the one still subscribed is heard.
        await backend.pubsub.unsubscribe(me, evil.jid, chosen, {})
        assert evil.node(chosen).subscribers == {}
        evil.send_event(full, chosen, [("chosen-2", entry("chosen", 2))])
        evil.send_event(full, kept, [("kept-1", entry("kept", 1))])
        await wait_items_event(log, evil.jid, kept, "kept-1")
        assert item_ids(items_events(log, evil.jid, chosen)) == ["chosen-1"]
        assert item_ids(items_events(log, evil.jid)) == ["chosen-1", "kept-1"]


async def test_a_contacts_events_still_arrive_and_a_strangers_sent_before_do_not(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    server = prosody_server
    me, friend = unique_names("befriended", 2)
    await server.register_many([me, friend])
    await befriend(server, me, friend)
    account, owner = server.jid(me), server.jid(friend)
    db = tmp_path / "roost.sqlite"
    async with (
        running_backend(db, server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        async with XmppPeer(server, friend) as pf:
            await pf.wait_online(account)
            evil.send_event(full, MICROBLOG, [("spam-1", entry("spam", 1))])
            evil.send_event(full, f"{COMMENTS}spam", [("spam-2", entry("spam", 2))])
            # Roost has read the stranger's notifications before the contact publishes.
            await evil.round_trips(full)
            await pf.publish(MICROBLOG, f"{friend}-1", entry(friend, 1), {})
            event = await wait_items_event(log, owner, MICROBLOG, f"{friend}-1")
        assert event.profile == me and event.kind == "items"
        assert items_events(log, evil.jid) == []
        assert {n.service for n in await backend.db.nodes.list_nodes(profile=me)} <= {owner}
        assert evil.received_from(account) == [], evil.described(account)


@pytest.mark.parametrize("let_go", ["purge", "reset"])
async def test_a_node_read_is_heard_while_the_cache_is_subscribed_to_it(
    prosody_server: ProsodyServer, tmp_path: Path, let_go: str
) -> None:
    server = prosody_server
    (me,) = unique_names("reader", 1)
    await server.register_many([me])
    account = server.jid(me)
    kept = "urn:example:kept"
    db = tmp_path / "roost.sqlite"
    async with (
        running_backend(db, server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        evil.put_items(MICROBLOG, [(f"post-{n}", entry("post", n)) for n in range(3)])
        evil.put_items(kept, [])
        await backend.pubsub.subscribe(me, evil.jid, kept, {})
        # A frontend reads the blog: the cache analyses it and keeps it current with a
        # subscription of its own.
        first = await backend.pubsub.get_items(me, evil.jid, MICROBLOG, {})
        assert not first.from_cache and len(first.items) == 3
        await log.wait_state(evil.jid, MICROBLOG, "completed")
        assert list(evil.node(MICROBLOG).subscribers) == [account]

        evil.send_event(full, f"{COMMENTS}unread", [("comment-1", entry("comment", 1))])
        evil.send_event(full, MICROBLOG, [("post-new", entry("post", 9))])
        await wait_items_event(log, evil.jid, MICROBLOG, "post-new")
        assert items_events(log, evil.jid, f"{COMMENTS}unread") == []
        cached = await backend.pubsub.get_items(me, evil.jid, MICROBLOG, {})
        assert cached.from_cache and [i.id for i in cached.items][-1] == "post-new"

        # The cache lets the node go, and its subscription with it: the node's events are
        # a stranger's again (the person's own subscription is still heard).
        if let_go == "purge":
            await backend.pubsub.purge_cache({"services": [evil.jid], "nodes": [MICROBLOG]})
        else:
            await backend.pubsub.reset_cache()
        assert evil.node(MICROBLOG).subscribers == {}
        evil.send_event(full, MICROBLOG, [("post-late", entry("post", 10))])
        evil.send_event(full, kept, [("kept-1", entry("kept", 1))])
        await wait_items_event(log, evil.jid, kept, "kept-1")
        assert item_ids(items_events(log, evil.jid, MICROBLOG)) == ["post-new"]


async def make_contact(backend: Backend, log: EventLog, me: str, pal: str) -> None:
    """``pal`` (an address of the hostile service, which approves at once) becomes a
    contact whose presence ``me`` receives."""
    seen = len(log.events)
    await backend.contacts.add(me, pal, {})
    await log.wait_for(
        lambda e: (
            isinstance(e, ContactChanged)
            and e.contact.get("jid") == pal
            and e.contact.get("subscription") in ("to", "both")
        ),
        f"{pal} in the roster with its presence",
        after=seen,
        limit=ARRIVAL,
    )


@pytest.mark.parametrize("since", ["removal", "restart", "purge"])
async def test_a_former_contacts_node_is_no_longer_heard(
    prosody_server: ProsodyServer, tmp_path: Path, since: str
) -> None:
    """A contact on a hostile server, whose blog the cache kept by its presence, is
    removed: its notifications are a stranger's from then on (its PEP node refuses a
    pubsub subscription, so nothing else keeps it)."""
    server = prosody_server
    (me,) = unique_names("former", 1)
    await server.register_many([me])
    kept = "urn:example:kept"
    db = tmp_path / "roost.sqlite"
    async with HostileService(server) as evil:
        pal = f"pal@{evil.jid}"
        evil.put_items(MICROBLOG, [("pal-0", entry("pal", 0))], at=pal)
        evil.node(MICROBLOG, pal).open = False
        evil.put_items(kept, [])
        async with running_backend(db, server, [me]) as (backend, log):
            full = await backend.connect(me)
            await backend.pubsub.subscribe(me, evil.jid, kept, {})
            await make_contact(backend, log, me, pal)
            evil.send_event(full, MICROBLOG, [("pal-1", entry("pal", 1))], sender=pal)
            await wait_items_event(log, pal, MICROBLOG, "pal-1")
            await log.wait_state(pal, MICROBLOG, "completed")
            if since != "restart":
                await forget_contact(backend, log, me, pal, since)
                await stays_unheard(evil, log, full, pal, kept)
        if since == "restart":
            async with running_backend(db, server, [me]) as (backend, log):
                full = await backend.connect(me)
                await log.wait_state(pal, MICROBLOG, "completed")
                await forget_contact(backend, log, me, pal, since)
                await stays_unheard(evil, log, full, pal, kept)


async def forget_contact(backend: Backend, log: EventLog, me: str, pal: str, since: str) -> None:
    if since == "purge":
        await backend.pubsub.purge_cache({"services": [pal]})
    seen = len(log.events)
    await backend.contacts.remove(me, pal)
    if since == "purge":
        await log.wait_for(
            lambda e: isinstance(e, ContactChanged) and bool(e.contact.get("removed")),
            f"{pal} leaving the roster",
            after=seen,
            limit=ARRIVAL,
        )
    else:
        # Its node is resynchronised, finds no way to be kept current, and says so.
        await log.wait_for(
            lambda e: (
                isinstance(e, SyncStateChanged)
                and (e.service, e.node, e.state) == (pal, MICROBLOG, "no_sync")
            ),
            f"{pal}'s blog leaving the cache",
            after=seen,
            limit=ARRIVAL,
        )


async def stays_unheard(
    evil: HostileService, log: EventLog, full: str, pal: str, kept: str
) -> None:
    """``pal``'s next notification is dropped; the one sent after it, on a node the person
    subscribed to, is heard (so the first one was dealt with)."""
    evil.send_event(full, MICROBLOG, [("pal-2", entry("pal", 2))], sender=pal)
    evil.send_event(full, kept, [("kept-1", entry("kept", 1))])
    await wait_items_event(log, evil.jid, kept, "kept-1")
    assert "pal-2" not in item_ids(items_events(log, pal))


async def test_the_persons_subscription_is_heard_after_a_cache_reset_and_a_restart(
    prosody_server: ProsodyServer, tmp_path: Path
) -> None:
    """Reset empties the cache, not the person's choices: their subscription is still
    heard after a restart, while the node the cache had subscribed to for itself is not."""
    server = prosody_server
    (me,) = unique_names("resetter", 1)
    await server.register_many([me])
    account = server.jid(me)
    chosen, later = "urn:example:chosen", "urn:example:later"
    db = tmp_path / "roost.sqlite"
    async with HostileService(server) as evil:
        evil.put_items(MICROBLOG, [(f"post-{n}", entry("post", n)) for n in range(3)])
        evil.put_items(chosen, [])
        evil.put_items(later, [])
        async with running_backend(db, server, [me]) as (backend, log):
            await backend.connect(me)
            await backend.pubsub.get_items(me, evil.jid, MICROBLOG, {})
            await log.wait_state(evil.jid, MICROBLOG, "completed")
            await backend.pubsub.subscribe(me, evil.jid, chosen, {})
            await backend.pubsub.reset_cache()
            assert evil.node(MICROBLOG).subscribers == {}
            assert list(evil.node(chosen).subscribers) == [account]
            await backend.pubsub.subscribe(me, evil.jid, later, {})
        async with running_backend(db, server, [me]) as (backend, log):
            full = await backend.connect(me)
            evil.send_event(full, MICROBLOG, [("post-late", entry("post", 9))])
            evil.send_event(full, chosen, [("chosen-1", entry("chosen", 1))])
            evil.send_event(full, later, [("later-1", entry("later", 1))])
            await wait_items_event(log, evil.jid, later, "later-1")
            assert item_ids(items_events(log, evil.jid)) == ["chosen-1", "later-1"]


async def test_a_sender_address_the_client_library_rejects_is_dropped_quietly(
    prosody_server: ProsodyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Prosody lets a component send from ``<emoji>@its.domain`` (its stringprep allows
    code points unassigned in Unicode 3.2); slixmpp's nodeprep refuses them."""
    server = prosody_server
    (me,) = unique_names("oddsender", 1)
    await server.register_many([me])
    account = server.jid(me)
    caplog.set_level(logging.INFO, logger="roost")
    async with (
        running_backend(tmp_path / "roost.sqlite", server, [me]) as (backend, log),
        HostileService(server) as evil,
    ):
        full = await backend.connect(me)
        for n in range(20):
            sender = f"\U0001f600{n}@{evil.jid}"
            evil.send_event(full, MICROBLOG, [(f"odd-{n}", entry("odd", n))], sender=sender)
        await evil.round_trips(full)
        assert log.of(ItemsEvent) == []
        assert evil.received_from(account) == [], evil.described(account)
    loud = [
        r for r in caplog.records if r.name.startswith("roost") and r.levelno >= logging.WARNING
    ]
    assert loud == [], [r.getMessage() for r in loud]
