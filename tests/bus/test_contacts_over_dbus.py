"""The Contacts interface through the bus, on Prosody and on ejabberd, roostd as a process.

The world (a friend, a request sent while roostd was not running) is made beforehand by
independent XMPP clients; the person's side is the bus only.
"""

from __future__ import annotations

from typing import Any

import pytest

from roost.bridge.client import NotFoundError, RoostClient
from tests.fixtures.contact_signals import ContactSignals
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.world import (
    XmppPeer,
    befriend,
    request_only,
    subscription_is,
    unique_names,
)
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]


def by_jid(contacts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {contact["jid"]: contact for contact in contacts}


async def test_contacts_and_requests_through_the_bus(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer
) -> None:
    me, friend, eve, newcomer = unique_names("contacts", 4)
    await xmpp_server.register_many([me, friend, eve, newcomer])
    me_jid, friend_jid, eve_jid, newcomer_jid = (
        xmpp_server.jid(user) for user in (me, friend, eve, newcomer)
    )
    await befriend(xmpp_server, me, friend)
    # Asked while no Roost was running: the server delivers it again at login.
    await request_only(xmpp_server, eve, me)

    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    signals = ContactSignals()
    await signals.listen(client)
    jid, password, options = xmpp_server.credentials(me)
    await client.create_profile(me, jid, password, options)
    assert await client.list_contacts(me) == []
    await client.connect_profile(me)

    # The roster was read at session start.
    listed = by_jid(await client.list_contacts(me))
    assert listed[friend_jid] == {
        "jid": friend_jid,
        "name": "",
        "groups": [],
        "subscription": "both",
        "pending_out": False,
        "pending_in": False,
    }
    # The pending request is announced and kept, never approved by Roost itself.
    await signals.wait("SubscriptionRequest", me, lambda j: j == eve_jid, "eve's request")
    requests = await client.list_subscription_requests(me)
    assert [r["jid"] for r in requests] == [eve_jid]
    assert isinstance(requests[0]["received"], float) and requests[0]["received"] > 0
    async with XmppPeer(xmpp_server, eve) as pe:
        assert (await pe.roster())[me_jid]["subscription"] == "none"
        await client.authorize(me, eve_jid, False)
        await pe.wait_roster(me_jid, subscription_is("none", ask=False))
    assert await client.list_subscription_requests(me) == []
    with pytest.raises(NotFoundError):
        await client.authorize(me, eve_jid, True)

    async with XmppPeer(xmpp_server, newcomer) as pn:
        # A request while connected, approved through the bus.
        await pn.request_subscription(me_jid)
        await signals.wait("SubscriptionRequest", me, lambda j: j == newcomer_jid, "a request")
        assert [r["jid"] for r in await client.list_subscription_requests(me)] == [newcomer_jid]
        await client.authorize(me, newcomer_jid, True)
        await pn.wait_roster(me_jid, subscription_is("to"))
        assert await client.list_subscription_requests(me) == []

        # Added back with a name and a group: our own request goes out.
        await client.add_contact(me, newcomer_jid, name="Newcomer", groups=["Work", "Pals"])
        added = await signals.wait(
            "ContactChanged",
            me,
            lambda c: c["jid"] == newcomer_jid and c["name"] == "Newcomer" and c["pending_out"],
            "the added contact",
        )
        assert added["groups"] == ["Pals", "Work"]
        assert added["subscription"] == "from"
        assert added["removed"] is False
        await pn.wait_subscription_request(me_jid)
        assert by_jid(await client.list_contacts(me))[newcomer_jid]["name"] == "Newcomer"

        await client.remove_contact(me, newcomer_jid)
        await signals.wait(
            "ContactChanged",
            me,
            lambda c: c["jid"] == newcomer_jid and c["removed"],
            "the removal",
        )
        assert newcomer_jid not in by_jid(await client.list_contacts(me))
        with pytest.raises(NotFoundError):
            await client.remove_contact(me, newcomer_jid)

    expected = await client.list_contacts(me)
    client.close()
    assert daemon.terminate() == 0

    # Started again and offline: the stored roster answers.
    again = roostd_launcher.start(database=daemon.database)
    client = await RoostClient.connect(again.bus_address)
    try:
        assert not await client.is_connected(me)
        assert await client.list_contacts(me) == expected
        assert friend_jid in by_jid(expected)
        assert await client.list_subscription_requests(me) == []
    finally:
        client.close()
    assert again.terminate() == 0
