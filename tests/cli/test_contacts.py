"""``roost contacts`` against roostd and a real server (Prosody and ejabberd).

The world (a friend, a request sent while the profile was offline) is made beforehand by
independent XMPP clients; the person's side is the command line only. A client of the
daemon listens to its signals so that the test waits for what it checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from roost.bridge.client import RoostClient
from roost.cli.exit_codes import ExitCode
from tests.cli.conftest import RoostCli, cli_env
from tests.cli.pubsub_helpers import one_line_error, profile_name, run
from tests.fixtures.contact_signals import ContactSignals
from tests.fixtures.dbus import PrivateBus
from tests.fixtures.world import (
    XmppPeer,
    befriend,
    request_only,
    subscription_is,
    unique_names,
)
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.dbus


def by_jid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {contact["jid"]: contact for contact in document["contacts"]}


@pytest.mark.xmpp
async def test_contacts_from_the_command_line(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    me, friend, eve, newcomer, quiet = unique_names("clicontacts", 5)
    await xmpp_server.register_many([me, friend, eve, newcomer, quiet])
    me_jid, friend_jid, eve_jid, newcomer_jid, quiet_jid = (
        xmpp_server.jid(user) for user in (me, friend, eve, newcomer, quiet)
    )
    await befriend(xmpp_server, me, friend)
    # Asked while the profile was offline: the server delivers it again at login.
    await request_only(xmpp_server, eve, me)

    signals = ContactSignals()
    await signals.listen(roost_client)
    profile = profile_name(me)
    jid, password, options = xmpp_server.credentials(me)
    where = ["--host", str(options["host"]), "--port", str(options["port"]), "--tls", "none"]
    made = await run(roost_cli, "profile", "create", profile, jid, *where, input=password)
    assert made.code == 0, made.stderr
    p = ["-p", profile]

    # Never connected: nothing yet, and changes need a connection.
    assert (await run(roost_cli, "contacts", "list", *p, "--json")).json() == {"contacts": []}
    assert (await run(roost_cli, "contacts", "requests", *p, "--json")).json() == {"requests": []}
    one_line_error(await run(roost_cli, "contacts", "add", friend_jid, *p), 5)
    one_line_error(await run(roost_cli, "contacts", "authorize", eve_jid, *p), 5)

    assert (await run(roost_cli, "profile", "connect", profile)).code == 0
    listed = by_jid((await run(roost_cli, "contacts", "list", *p, "--json")).json())
    assert listed[friend_jid] == {
        "jid": friend_jid,
        "name": "",
        "groups": [],
        "subscription": "both",
        "pending_out": False,
        "pending_in": False,
    }
    table = await run(roost_cli, "contacts", "list", *p)
    assert table.code == 0 and friend_jid in table.stdout and "both" in table.stdout

    # The request waiting at login is listed, and refused from the command line.
    await signals.wait("SubscriptionRequest", profile, lambda j: j == eve_jid)
    requests = (await run(roost_cli, "contacts", "requests", *p, "--json")).json()["requests"]
    assert [r["jid"] for r in requests] == [eve_jid]
    assert set(requests[0]) == {"jid", "message", "received"}
    assert isinstance(requests[0]["received"], float)
    assert eve_jid in (await run(roost_cli, "contacts", "requests", *p)).stdout
    async with XmppPeer(xmpp_server, eve) as pe:
        denied = await run(roost_cli, "contacts", "authorize", eve_jid, "--deny", *p)
        assert denied.code == 0, denied.stderr
        await pe.wait_roster(me_jid, subscription_is("none", ask=False))
    assert (await run(roost_cli, "contacts", "requests", *p, "--json")).json() == {"requests": []}
    line = one_line_error(await run(roost_cli, "contacts", "authorize", eve_jid, *p), 4)
    assert eve_jid in line

    async with XmppPeer(xmpp_server, newcomer) as pn:
        # A request while connected, approved.
        await pn.request_subscription(me_jid)
        await signals.wait("SubscriptionRequest", profile, lambda j: j == newcomer_jid)
        approved = await run(roost_cli, "contacts", "authorize", newcomer_jid, *p)
        assert approved.code == 0, approved.stderr
        await pn.wait_roster(me_jid, subscription_is("to"))

        # Added back with a name and two groups: our own request goes out.
        added = await run(
            roost_cli,
            *["contacts", "add", newcomer_jid, "--name", "Newcomer"],
            *["--group", "Work", "--group", "Pals", *p],
        )
        assert added.code == 0, added.stderr
        await signals.wait(
            "ContactChanged",
            profile,
            lambda c: c["jid"] == newcomer_jid and c["name"] == "Newcomer" and c["pending_out"],
        )
        await pn.wait_subscription_request(me_jid)
        listed = by_jid((await run(roost_cli, "contacts", "list", *p, "--json")).json())
        assert listed[newcomer_jid] == {
            "jid": newcomer_jid,
            "name": "Newcomer",
            "groups": ["Pals", "Work"],
            "subscription": "from",
            "pending_out": True,
            "pending_in": False,
        }

        removed = await run(roost_cli, "contacts", "remove", newcomer_jid, *p)
        assert removed.code == 0, removed.stderr
        await signals.wait(
            "ContactChanged", profile, lambda c: c["jid"] == newcomer_jid and c["removed"]
        )
        listed = by_jid((await run(roost_cli, "contacts", "list", *p, "--json")).json())
        assert newcomer_jid not in listed
        one_line_error(await run(roost_cli, "contacts", "remove", newcomer_jid, *p), 4)

    # Only into the roster: no request goes out.
    quietly = await run(roost_cli, "contacts", "add", quiet_jid, "--no-subscribe", *p)
    assert quietly.code == 0, quietly.stderr
    contact = await signals.wait("ContactChanged", profile, lambda c: c["jid"] == quiet_jid)
    assert contact["pending_out"] is False and contact["subscription"] == "none"
    assert contact["name"] == "" and contact["groups"] == []

    # Offline, the stored roster still answers.
    assert (await run(roost_cli, "profile", "disconnect", profile)).code == 0
    offline = by_jid((await run(roost_cli, "contacts", "list", *p, "--json")).json())
    assert set(offline) == {friend_jid, quiet_jid}


@pytest.mark.parametrize("jid", ["not a jid@@", "friend@example.org/phone", "@example.org"])
async def test_a_bad_jid_exits_3(roost_cli: RoostCli, jid: str) -> None:
    profile = profile_name("offline")
    made = await run(roost_cli, "profile", "create", profile, f"{profile}@example.org", input="pw")
    assert made.code == 0
    for args in (
        ["add", jid],
        ["remove", jid],
        ["authorize", jid],
        ["authorize", jid, "--deny"],
    ):
        one_line_error(await run(roost_cli, "contacts", *args, "-p", profile), 3)


async def test_unknown_profiles_usage_and_no_daemon(
    roost_cli: RoostCli, test_bus: PrivateBus, tmp_path: Path
) -> None:
    ghost = profile_name("ghost")
    for args in (
        ["list", "--json"],
        ["requests", "--json"],
        ["add", "friend@example.org"],
        ["remove", "friend@example.org"],
        ["authorize", "friend@example.org"],
    ):
        line = one_line_error(await run(roost_cli, "contacts", *args, "-p", ghost), 4)
        assert ghost in line, args
    assert (await run(roost_cli, "contacts", "add")).code == ExitCode.USAGE
    assert (await run(roost_cli, "contacts", "authorize", "x@y", "--accept")).code == 2
    nobody = RoostCli(test_bus.address, cli_env(tmp_path))
    for args in (["list"], ["requests", "--json"], ["add", "friend@example.org"]):
        one_line_error(await run(nobody, "contacts", *args), ExitCode.DAEMON_NOT_RUNNING)
