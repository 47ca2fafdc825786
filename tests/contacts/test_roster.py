"""Contacts as a person who already uses XMPP has them: rosters and requests made by
another client before roostd starts, on Prosody and ejabberd, across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.service.errors import InvalidArgument, NotConnected, NotFound
from roost.service.events import ContactChanged, SubscriptionRequested
from tests.fixtures.backend import running_backend
from tests.fixtures.world import (
    XmppPeer,
    befriend,
    follow,
    request_only,
    subscription_is,
    unique_names,
)
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp


def as_server_says(roster: dict[str, dict]) -> list[tuple[str, str, bool, str, list[str]]]:
    return sorted(
        (jid, item["subscription"], bool(item["ask"]), item["name"], sorted(item["groups"]))
        for jid, item in roster.items()
    )


def as_roost_says(contacts: list[dict]) -> list[tuple[str, str, bool, str, list[str]]]:
    return sorted(
        (c["jid"], c["subscription"], c["pending_out"], c["name"], sorted(c["groups"]))
        for c in contacts
    )


async def test_a_roster_made_before_roostd_started_is_listed_and_kept_across_restarts(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, friend, followed, asked, fan = unique_names("roster", 5)
    await xmpp_server.register_many([me, friend, followed, asked, fan])
    await befriend(xmpp_server, me, friend)
    await follow(xmpp_server, me, followed)
    await request_only(xmpp_server, me, asked)
    await follow(xmpp_server, fan, me)
    async with XmppPeer(xmpp_server, me) as peer:
        await peer.set_contact(xmpp_server.jid(friend), "Best Friend", ["Family", "Close"])
        expected = as_server_says(await peer.roster())
    assert len(expected) == 4

    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        assert await backend.contacts.list(me) == []  # never connected: nothing known yet
        await backend.connect(me)
        contacts = await backend.contacts.list(me)
        assert as_roost_says(contacts) == expected
        by_jid = {c["jid"]: c for c in contacts}
        assert by_jid[xmpp_server.jid(friend)]["subscription"] == "both"
        assert by_jid[xmpp_server.jid(asked)]["pending_out"] is True
        assert by_jid[xmpp_server.jid(fan)]["subscription"] == "from"

    # Restarted and offline: the stored roster; connected again: still the server's.
    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        assert as_roost_says(await backend.contacts.list(me)) == expected
        await backend.connect(me)
        assert as_roost_says(await backend.contacts.list(me)) == expected


async def test_changes_made_by_another_client_show_in_list_and_signals(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, other = unique_names("changes", 2)
    await xmpp_server.register_many([me, other])
    other_jid = xmpp_server.jid(other)
    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        async with XmppPeer(xmpp_server, me) as peer:

            def change(name: str | None = None, removed: bool = False):  # type: ignore[no-untyped-def]
                def test(event: object) -> bool:
                    return (
                        isinstance(event, ContactChanged)
                        and event.profile == me
                        and event.contact["jid"] == other_jid
                        and event.contact["removed"] is removed
                        and (name is None or event.contact["name"] == name)
                    )

                return test

            await peer.set_contact(other_jid, "Other", ["Work"])
            added = await log.wait_for(change("Other"), "ContactChanged for the new contact")
            assert added.contact["groups"] == ["Work"]
            assert added.contact["subscription"] == "none"
            await peer.set_contact(other_jid, "Renamed", ["Work"])
            await log.wait_for(change("Renamed"), "ContactChanged for the rename")
            listed = {c["jid"]: c for c in await backend.contacts.list(me)}
            assert listed[other_jid]["name"] == "Renamed"
            await peer.remove_contact(other_jid)
            await log.wait_for(change(removed=True), "ContactChanged for the removal")
            assert other_jid not in {c["jid"] for c in await backend.contacts.list(me)}
            assert as_roost_says(await backend.contacts.list(me)) == as_server_says(
                await peer.roster()
            )


async def test_a_burst_of_changes_by_another_client_ends_as_the_server_has_it(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    """Another client of the account reorganises the roster at once: the pushes arrive
    while the first is being stored, and are stored together. List, the signals and the
    stored roster after a restart all end as the server's roster."""
    (me,) = unique_names("burst", 1)
    await xmpp_server.register_many([me])
    contacts = [xmpp_server.jid(f"{me}-c{n}") for n in range(24)]
    marker = xmpp_server.jid(f"{me}-last")
    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        async with XmppPeer(xmpp_server, me) as peer:
            await asyncio.gather(*(peer.set_contact(jid, "New", ["A"]) for jid in contacts))
            await asyncio.gather(
                *(
                    peer.remove_contact(jid) if n % 2 else peer.set_contact(jid, "Renamed", ["B"])
                    for n, jid in enumerate(contacts)
                )
            )
            await peer.set_contact(marker, "Last")
            # Pushes come in order: once the last is announced, all are stored.
            await log.wait_for(
                lambda e: isinstance(e, ContactChanged) and e.contact["jid"] == marker,
                "ContactChanged for the last change",
            )
            expected = as_server_says(await peer.roster())
        assert len(expected) == 13
        assert as_roost_says(await backend.contacts.list(me)) == expected
        # Every change was announced, in the order the server made them.
        announced = {
            jid: [
                e.contact
                for e in log.events
                if isinstance(e, ContactChanged) and e.contact["jid"] == jid
            ]
            for jid in contacts
        }
        for n, jid in enumerate(contacts):
            assert announced[jid][0]["name"] == "New"
            last = announced[jid][-1]
            assert last["removed"] if n % 2 else last["name"] == "Renamed"
    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        assert as_roost_says(await backend.contacts.list(me)) == expected


async def test_a_strangers_request_waits_for_the_person(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, eve, mallory = unique_names("stranger", 3)
    await xmpp_server.register_many([me, eve, mallory])
    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        me_jid, eve_jid = xmpp_server.jid(me), xmpp_server.jid(eve)
        async with XmppPeer(xmpp_server, eve) as pe, XmppPeer(xmpp_server, mallory) as pm:
            await pe.request_subscription(me_jid)
            await pm.request_subscription(me_jid)
            for jid in (eve_jid, pm.jid):
                await log.wait_for(
                    lambda e, jid=jid: isinstance(e, SubscriptionRequested) and e.jid == jid,
                    f"SubscriptionRequested from {jid}",
                )
            # Handled and not approved: eve's own roster still says she only asked. A ping
            # on roostd's stream makes sure the server has handled anything roostd sent
            # before it (an approval would be among that).
            requests = await backend.contacts.list_requests(me)
            assert sorted(r["jid"] for r in requests) == sorted([eve_jid, pm.jid])
            client = backend.sessions.client(me)
            await client.plugin["xep_0199"].ping(jid=xmpp_server.domain, timeout=30)
            assert (await pe.roster())[me_jid]["subscription"] == "none"
            assert (await pe.roster())[me_jid]["ask"]

            await backend.contacts.authorize(me, eve_jid, True)
            await pe.wait_roster(me_jid, subscription_is("to"))
            await backend.contacts.authorize(me, pm.jid, False)
            await pm.wait_roster(me_jid, subscription_is("none", ask=False))
            assert await backend.contacts.list_requests(me) == []
            with pytest.raises(NotFound):
                await backend.contacts.authorize(me, pm.jid, True)


async def test_a_request_made_while_roostd_was_stopped_is_delivered_at_connection(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, eve = unique_names("offline", 2)
    await xmpp_server.register_many([me, eve])
    await request_only(xmpp_server, eve, me)
    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        event = await log.wait_for(
            lambda e: isinstance(e, SubscriptionRequested) and e.jid == xmpp_server.jid(eve),
            "the pending request at connection",
        )
        assert event.profile == me
    # Kept while nobody answered: listed after a restart, before any connection.
    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        requests = await backend.contacts.list_requests(me)
        assert [r["jid"] for r in requests] == [xmpp_server.jid(eve)]
        assert requests[0]["received"] > 0


async def test_add_and_remove_through_roost(xmpp_server: XmppServer, tmp_path: Path) -> None:
    me, friend = unique_names("add", 2)
    await xmpp_server.register_many([me, friend])
    db = tmp_path / "roost.sqlite"
    friend_jid = xmpp_server.jid(friend)
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        with pytest.raises(NotConnected):
            await backend.contacts.add(me, friend_jid, {})
        await backend.connect(me)
        for bad, options in (
            ("not a jid@@", {}),
            (f"{friend_jid}/phone", {}),
            (friend_jid, {"colour": "red"}),
            (friend_jid, {"groups": "Work"}),
            (friend_jid, {"subscribe": "yes"}),
            (xmpp_server.jid(me), {}),
        ):
            with pytest.raises(InvalidArgument):
                await backend.contacts.add(me, bad, options)
        async with XmppPeer(xmpp_server, friend) as pf:
            await backend.contacts.add(me, friend_jid, {"name": "F", "groups": ["Pals"]})
            listed = {c["jid"]: c for c in await backend.contacts.list(me)}
            assert listed[friend_jid]["name"] == "F" and listed[friend_jid]["groups"] == ["Pals"]
            await pf.wait_subscription_request(xmpp_server.jid(me))
            await log.wait_for(
                lambda e: (
                    isinstance(e, ContactChanged)
                    and e.contact["jid"] == friend_jid
                    and e.contact["pending_out"]
                ),
                "the added contact, pending",
            )
            await pf.approve(xmpp_server.jid(me))
            await log.wait_for(
                lambda e: (
                    isinstance(e, ContactChanged)
                    and e.contact["jid"] == friend_jid
                    and e.contact["subscription"] == "to"
                ),
                "the approved contact",
            )
            await backend.contacts.remove(me, friend_jid)
            # Read your writes: gone from List as soon as Remove returns.
            assert friend_jid not in {c["jid"] for c in await backend.contacts.list(me)}
            await log.wait_for(
                lambda e: (
                    isinstance(e, ContactChanged)
                    and e.contact["jid"] == friend_jid
                    and e.contact["removed"]
                ),
                "the removal",
            )
            with pytest.raises(NotFound):
                await backend.contacts.remove(me, friend_jid)


@pytest.mark.parametrize("xmpp_server", ["prosody"], indirect=True)
async def test_an_unchanged_roster_is_not_sent_again_where_the_server_versions_rosters(
    xmpp_server: XmppServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    me, friend, newcomer = unique_names("versions", 3)
    await xmpp_server.register_many([me, friend, newcomer])
    await befriend(xmpp_server, me, friend)
    db = tmp_path / "roost.sqlite"
    caplog.set_level("DEBUG", logger="roost.service.contacts")

    def said(text: str) -> bool:
        return any(
            text in r.getMessage() for r in caplog.records if r.name == "roost.service.contacts"
        )

    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        await backend.connect(me)
        assert said("roster of 1 contacts received")
    caplog.clear()
    # Restarted with nothing changed: the stored version is sent, and the server has
    # nothing to send back.
    async with running_backend(db, xmpp_server, [me]) as (backend, _log):
        await backend.connect(me)
        assert said("stored roster is current") and not said("roster of")
        assert [c["jid"] for c in await backend.contacts.list(me)] == [xmpp_server.jid(friend)]
    # Changed by another client while roostd was stopped: the change is there after the
    # next connection (Prosody sends the whole roster again then).
    async with XmppPeer(xmpp_server, me) as peer:
        await peer.set_contact(xmpp_server.jid(newcomer), "New")
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        await log.wait_for(
            lambda e: (
                isinstance(e, ContactChanged) and e.contact["jid"] == xmpp_server.jid(newcomer)
            ),
            "the contact added while roostd was stopped",
        )
        contacts = {c["jid"]: c for c in await backend.contacts.list(me)}
        assert contacts[xmpp_server.jid(newcomer)]["name"] == "New"
        assert xmpp_server.jid(friend) in contacts
