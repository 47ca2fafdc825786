"""``roost pubsub``: every subcommand against roostd and a real XMPP server (Prosody, whose
pubsub has no RSM so Roost pages it, and ejabberd, whose RSM is used as is)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.bridge.client import RoostClient
from tests.cli.conftest import RoostCli, cli_env
from tests.cli.pubsub_helpers import (
    BLOG_NODE_CONFIG,
    MICROBLOG,
    atom_entry,
    new_profile,
    one_line_error,
    run,
)
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

NS = "urn:example:roost-cli"


def note(n: int) -> str:
    return f"<note xmlns='{NS}'><n>{n}</n><text>note number {n}</text></note>"


@pytest.fixture
async def own_daemon(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> AsyncIterator[tuple[RoostCli, RoostClient]]:
    """A daemon of the test's own, with the command and a client pointed at it.

    Both test servers call their pubsub service ``pubsub.localhost``: a daemon shared
    by the two runs would take what it learnt of one (no RSM, the listing's direction)
    for the other's, which no person's daemon meets (a service's JID names one service).
    """
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    yield RoostCli(daemon.bus_address, cli_env(tmp_path)), client
    client.close()


async def test_get_pages_a_node_built_before_the_daemon_connected(
    own_daemon: tuple[RoostCli, RoostClient], xmpp_server: XmppServer
) -> None:
    roost_cli, roost_client = own_daemon
    # alice (an admin, who may create nodes on Prosody's component) fills a node first.
    service = xmpp_server.pubsub_service
    node = f"cli-{uuid.uuid4().hex[:10]}"
    async with XmppPeer(xmpp_server, "alice") as peer:
        await peer.create_node(node, {"pubsub#max_items": "1000"}, service=service)
        for n in range(7):
            await peer.publish(node, f"i{n}", note(n), service=service)
    profile = await new_profile(roost_client, xmpp_server, "alice")
    ids = [f"i{n}" for n in range(7)]
    base = ["pubsub", "get", service, node, "-p", profile]

    every = (await run(roost_cli, *base, "--json")).json()
    assert set(every) == {"items", "metadata"}
    assert [i["id"] for i in every["items"]] == ids
    assert every["metadata"]["complete"] is True and every["metadata"]["rsm_count"] == 7
    first = every["items"][0]
    assert first["parsed"] is None and first["omitted"] is False
    assert "note number 0" in first["xml"] and "publisher" in first

    newest = (await run(roost_cli, *base, "--max", "3", "--json")).json()
    assert [i["id"] for i in newest["items"]] == ids[-3:]
    assert newest["metadata"]["complete"] is False
    older = (
        await run(
            roost_cli, *base, "--max", "3", "--before", newest["metadata"]["rsm_first"], "--json"
        )
    ).json()
    assert [i["id"] for i in older["items"]] == ids[1:4]
    oldest = (
        await run(
            roost_cli, *base, "--max", "3", "--before", older["metadata"]["rsm_first"], "--json"
        )
    ).json()
    assert [i["id"] for i in oldest["items"]] == ids[:1] and oldest["metadata"]["complete"]

    forward = (await run(roost_cli, *base, "--max", "4", "--after", "", "--json")).json()
    assert [i["id"] for i in forward["items"]] == ids[:4]
    rest = (
        await run(
            roost_cli, *base, "--max", "4", "--after", forward["metadata"]["rsm_last"], "--json"
        )
    ).json()
    assert [i["id"] for i in rest["items"]] == ids[4:] and rest["metadata"]["complete"]

    chosen = (await run(roost_cli, *base, "--id", "i5", "--id", "i2", "--json")).json()
    # In node order, whatever order they were asked in.
    assert [i["id"] for i in chosen["items"]] == ["i2", "i5"]
    fresh = (await run(roost_cli, *base, "--no-cache", "--max", "1", "--json")).json()
    assert fresh["metadata"]["from_cache"] is False and fresh["items"][0]["id"] == "i6"

    # For people: each item's id, its XML indented, and how to page on.
    human = await run(roost_cli, *base, "--max", "2")
    assert human.code == 0, human.stderr
    assert "i5" in human.stdout and "i6" in human.stdout
    assert "\n  <note" in human.stdout or "\n    <note" in human.stdout
    assert "<text>note number 6</text>" in human.stdout
    assert "2 item(s) of 7" in human.stdout
    assert f"--before {newest['metadata']['rsm_first'][:3]}" in human.stdout


async def test_node_lifecycle_publish_retract_and_config(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    service = xmpp_server.pubsub_service
    profile = await new_profile(roost_client, xmpp_server, "alice")
    node = f"cli-{uuid.uuid4().hex[:10]}"

    created = await run(
        roost_cli, "pubsub", "node", "create", service, node, "-p", profile,
        "--set", "pubsub#max_items=100", "--json",
    )  # fmt: skip
    assert created.json() == {"node": node}
    config = (
        await run(roost_cli, "pubsub", "node", "config", service, node, "-p", profile, "--json")
    ).json()
    assert set(config) == {"config"} and config["config"]["pubsub#max_items"] == "100"
    changed = await run(
        roost_cli, "pubsub", "node", "config", service, node, "-p", profile,
        "--set", "pubsub#title=Made by roost", "--json",
    )  # fmt: skip
    assert changed.json()["config"]["pubsub#title"] == "Made by roost"
    table = await run(roost_cli, "pubsub", "node", "config", service, node, "-p", profile)
    assert table.code == 0 and "pubsub#title" in table.stdout and "Made by roost" in table.stdout

    payload = tmp_path / "one.xml"
    payload.write_text(note(1) + "\n")
    published = await run(
        roost_cli, "pubsub", "publish", service, node, "-p", profile, "--id", "first",
        "--file", str(payload), "--json",
    )  # fmt: skip
    assert published.json() == {"id": "first"}
    from_stdin = await run(
        roost_cli, "pubsub", "publish", service, node, "-p", profile, input=note(2)
    )
    assert from_stdin.code == 0, from_stdin.stderr
    server_id = from_stdin.stdout.strip()
    assert server_id and server_id != "first"
    got = (await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--json")).json()
    assert [i["id"] for i in got["items"]] == ["first", server_id]
    assert "note number 2" in got["items"][1]["xml"]

    retracted = await run(roost_cli, "pubsub", "retract", service, node, "first", "-p", profile)
    assert retracted.code == 0, retracted.stderr
    # Only what was asked goes to stdout; the note goes to stderr.
    assert retracted.stdout == "" and "Retracted 1 item(s)" in retracted.stderr
    got = (await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--json")).json()
    assert [i["id"] for i in got["items"]] == [server_id]

    purged = await run(roost_cli, "pubsub", "node", "purge", service, node, "-p", profile)
    assert purged.code == 0, purged.stderr
    got = (await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--json")).json()
    assert got["items"] == [] and got["metadata"]["rsm_count"] == 0

    deleted = await run(roost_cli, "pubsub", "node", "delete", service, node, "-p", profile)
    assert deleted.code == 0, deleted.stderr
    gone = await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--json")
    assert "[Xmpp.ItemNotFound]" in one_line_error(gone, 8)
    # A payload that is not XML is the daemon's InvalidArgument.
    bad = await run(roost_cli, "pubsub", "publish", service, node, "-p", profile, input="<open>")
    one_line_error(bad, 3)
    missing = await run(
        roost_cli,
        "pubsub",
        "publish",
        service,
        node,
        "-p",
        profile,
        "--file",
        str(tmp_path / "none"),
    )
    assert "cannot read" in one_line_error(missing, 1)


async def test_subscribe_list_and_unsubscribe(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    service = xmpp_server.pubsub_service
    node = f"cli-{uuid.uuid4().hex[:10]}"
    async with XmppPeer(xmpp_server, "alice") as peer:
        await peer.create_node(node, {"pubsub#access_model": "open"}, service=service)
    (reader,) = unique_names("reader", 1)
    await xmpp_server.register_many([reader])
    profile = await new_profile(roost_client, xmpp_server, reader)

    subscribed = await run(roost_cli, "pubsub", "subscribe", service, node, "-p", profile, "--json")
    assert set(subscribed.json()) == {"subid"}
    listed = await run(roost_cli, "pubsub", "subscriptions", service, node, "-p", profile, "--json")
    subscriptions = listed.json()["subscriptions"]
    assert [(s["node"], s["subscription"]) for s in subscriptions] == [(node, "subscribed")]
    assert subscriptions[0]["jid"].split("/")[0] == xmpp_server.jid(reader)
    table = await run(roost_cli, "pubsub", "subscriptions", service, "-p", profile)
    assert table.code == 0 and node in table.stdout and "subscribed" in table.stdout

    ended = await run(roost_cli, "pubsub", "unsubscribe", service, node, "-p", profile)
    assert ended.code == 0, ended.stderr
    listed = await run(roost_cli, "pubsub", "subscriptions", service, node, "-p", profile, "--json")
    assert listed.json() == {"subscriptions": []}
    again = await run(roost_cli, "pubsub", "unsubscribe", service, node, "-p", profile)
    one_line_error(again, 8)


async def test_own_pep_service_is_a_dash(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    (writer,) = unique_names("writer", 1)
    await xmpp_server.register_many([writer])
    async with XmppPeer(xmpp_server, writer) as peer:
        await peer.create_node(MICROBLOG, BLOG_NODE_CONFIG)
        await peer.publish_many(MICROBLOG, [(f"p{n}", atom_entry(n)) for n in range(3)])
    profile = await new_profile(roost_client, xmpp_server, writer)
    own = (await run(roost_cli, "pubsub", "get", "-", MICROBLOG, "-p", profile, "--json")).json()
    assert sorted(i["id"] for i in own["items"]) == ["p0", "p1", "p2"]
    # Microblog posts come with their parsed data, decoded.
    assert {i["parsed"]["title"] for i in own["items"]} == {"Post 0", "Post 1", "Post 2"}
    by_jid = await run(
        roost_cli, "pubsub", "get", xmpp_server.jid(writer), MICROBLOG, "-p", profile, "--json"
    )
    assert sorted(i["id"] for i in by_jid.json()["items"]) == ["p0", "p1", "p2"]
    config = await run(
        roost_cli, "pubsub", "node", "config", "-", MICROBLOG, "-p", profile, "--json"
    )
    assert config.json()["config"]["pubsub#max_items"] == "1000"


async def test_errors_have_their_exit_codes(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    service = xmpp_server.pubsub_service
    profile = await new_profile(roost_client, xmpp_server, "bob")
    offline = await new_profile(roost_client, xmpp_server, "carol", connect=False)
    nowhere = f"nothing-{uuid.uuid4().hex[:8]}"

    missing = await run(roost_cli, "pubsub", "get", service, nowhere, "-p", profile, "--json")
    assert "Xmpp.ItemNotFound" in one_line_error(missing, 8)
    assert missing.stdout == ""
    unknown = await run(roost_cli, "pubsub", "get", service, nowhere, "-p", "nobody-at-all")
    assert "nobody-at-all" in one_line_error(unknown, 4)
    not_connected = await run(roost_cli, "pubsub", "subscriptions", service, "-p", offline)
    assert "not connected" in one_line_error(not_connected, 5)
    owner = await new_profile(roost_client, xmpp_server, "alice")
    node = f"cli-{uuid.uuid4().hex[:10]}"
    created = await run(roost_cli, "pubsub", "node", "create", service, node, "-p", owner)
    assert created.code == 0, created.stderr
    bad_token = await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--after", "i3")
    assert "token" in one_line_error(bad_token, 3)
    too_many = await run(roost_cli, "pubsub", "get", service, node, "-p", profile, "--max", "0")
    assert too_many.code == 2
    bad_service = await run(roost_cli, "pubsub", "get", "a@b/c", nowhere, "-p", profile)
    one_line_error(bad_service, 3)
    both = await run(roost_cli, "pubsub", "get", service, nowhere, "--after", "", "--before", "")
    assert both.code == 2 and "not both" in both.stderr
    bad_set = await run(roost_cli, "pubsub", "node", "config", service, nowhere, "--set", "novalue")
    assert bad_set.code == 2 and "FIELD=VALUE" in bad_set.stderr
    forbidden = await run(roost_cli, "pubsub", "node", "delete", service, node, "-p", profile)
    assert "Xmpp.Forbidden" in one_line_error(forbidden, 8)


def test_every_level_has_help(roost_cli: RoostCli) -> None:
    for args in (
        ["pubsub"],
        ["pubsub", "get"],
        ["pubsub", "publish"],
        ["pubsub", "retract"],
        ["pubsub", "subscribe"],
        ["pubsub", "unsubscribe"],
        ["pubsub", "subscriptions"],
        ["pubsub", "node"],
        ["pubsub", "node", "create"],
        ["pubsub", "node", "delete"],
        ["pubsub", "node", "purge"],
        ["pubsub", "node", "config"],
    ):
        result = roost_cli(*args, "--help")
        assert result.code == 0 and "Usage: roost" in result.stdout, args
