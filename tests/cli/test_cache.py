"""``roost cache``: search, sync, state, purge, reset and analysers against roostd, on
blogs an independent client published before the daemon connected."""

from __future__ import annotations

import asyncio
import calendar
import time
import uuid
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

POSTS = 12


def published_ts(n: int) -> float:
    """When atom_entry(n) says post n was published."""
    return float(calendar.timegm((2026, 1, 1, n // 60, n % 60, 0)))


async def blog_writer(server: XmppServer, posts: int = POSTS) -> str:
    """A new account whose microblog holds ``posts`` posts, published by its own client;
    its name."""
    (writer,) = unique_names("writer", 1)
    await server.register_many([writer])
    async with XmppPeer(server, writer) as peer:
        await peer.create_node(MICROBLOG, BLOG_NODE_CONFIG)
        await peer.publish_many(
            MICROBLOG,
            [
                (f"post-{n}", atom_entry(n, tags=("even" if n % 2 == 0 else "odd", "cli")))
                for n in range(1, posts + 1)
            ],
        )
    return writer


async def synced_writer(
    roost_cli: RoostCli, client: RoostClient, server: XmppServer
) -> tuple[str, str]:
    """A writer's blog synchronised by ``roost cache sync`` for the writer's profile:
    (profile, the writer's JID)."""
    writer = await blog_writer(server)
    profile = await new_profile(client, server, writer)
    synced = await run(roost_cli, "cache", "sync", "-", MICROBLOG, "-p", profile, "--json")
    state = synced.json()
    assert state["state"] == "completed" and state["item_count"] == POSTS, state
    return profile, server.jid(writer)


async def test_sync_state_and_search(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    profile, jid = await synced_writer(roost_cli, roost_client, xmpp_server)

    # The same node by its JID: a resync, which ends completed with every post again.
    again = await run(roost_cli, "cache", "sync", jid, MICROBLOG, "-p", profile, "--json")
    assert again.json()["item_count"] == POSTS
    human = await run(roost_cli, "cache", "sync", jid, MICROBLOG, "-p", profile)
    assert human.code == 0 and "completed" in human.stdout, human.stderr

    state = (await run(roost_cli, "cache", "state", "-", MICROBLOG, "-p", profile, "--json")).json()
    assert state["state"] == "completed" and state["current"] is True
    assert state["item_count"] == POSTS and state["analyser"] == "microblog"
    assert state["type"] == "blog" and state["synced_at"] > 0
    table = await run(roost_cli, "cache", "state", jid, MICROBLOG, "-p", profile)
    assert table.code == 0 and "completed" in table.stdout and "microblog" in table.stdout

    async def ids(*args: str) -> list[str]:
        result = await run(roost_cli, "cache", "search", "-p", profile, *args, "--json")
        document = result.json()
        assert set(document) == {"items"}
        return [hit["id"] for hit in document["items"]]

    everything = await ids()
    assert sorted(everything) == sorted(f"post-{n}" for n in range(1, POSTS + 1))
    hits = (await run(roost_cli, "cache", "search", "-p", profile, "--limit", "1", "--json")).json()
    hit = hits["items"][0]
    assert {"profile", "service", "node", "created", "updated", "xml", "parsed"} <= set(hit)
    assert hit["profile"] == profile and hit["service"] == jid and hit["node"] == MICROBLOG
    assert hit["parsed"]["title"].startswith("Post ")

    assert await ids("-F", "title", "eq", "Post 7") == ["post-7"]
    # VALUE as JSON: a number, an array; else a string.
    assert sorted(await ids("-F", "published_ts", "ge", str(published_ts(10)))) == [
        "post-10",
        "post-11",
        "post-12",
    ]
    assert sorted(await ids("-F", "title", "in", '["Post 2", "Post 3"]')) == ["post-2", "post-3"]
    # Whole numbers in an array, as a person types them.
    window = f"[{int(published_ts(3))}, {int(published_ts(4))}]"
    assert await ids("-F", "published_ts", "between", window, "-o", "published_ts") == [
        "post-3",
        "post-4",
    ]
    # A JSON string stays a string: no title is the number 7.
    assert await ids("-F", "title", "eq", '"7"') == []
    odd_teens = await ids("-F", "tags", "contains", "odd", "-F", "title", "like", "Post 1%")
    assert sorted(odd_teens) == ["post-1", "post-11"]
    by_created = await ids("-o", "@created:desc")
    assert sorted(by_created) == sorted(everything)
    assert await ids("-o", "published_ts:desc", "--limit", "3") == ["post-12", "post-11", "post-10"]
    assert await ids("-o", "published_ts", "--limit", "2", "--offset", "1") == ["post-2", "post-3"]
    assert await ids("-o", "title:asc", "--limit", "2") == ["post-1", "post-10"]
    assert await ids("--fts", "post 9", "-o", "published_ts") == ["post-9"]
    assert len(await ids("-t", "blog", "-n", MICROBLOG, "-s", jid)) == POSTS
    assert await ids("-t", "event") == []
    assert await ids("--subtype", "comment") == []
    assert await ids("-i", "post-4", "-i", "post-5", "-o", "published_ts") == ["post-4", "post-5"]

    people = await run(roost_cli, "cache", "search", "-p", profile, "-F", "title", "eq", "Post 7")
    assert people.code == 0 and "post-7" in people.stdout and "Post 7" in people.stdout
    assert "<entry" not in people.stdout


async def test_search_errors(roost_cli: RoostCli) -> None:
    bad_op = await run(roost_cli, "cache", "search", "-F", "title", "regex", "x")
    assert "unknown operator 'regex'" in one_line_error(bad_op, 3)
    bad_type = await run(roost_cli, "cache", "search", "-F", "published_ts", "gt", "true")
    one_line_error(bad_type, 3)
    null = await run(roost_cli, "cache", "search", "-F", "title", "eq", "null")
    assert "null" in one_line_error(null, 3)
    too_many = await run(roost_cli, "cache", "search", "--limit", "5000")
    assert "limit" in one_line_error(too_many, 3)
    no_words = await run(roost_cli, "cache", "search", "--fts", "***")
    one_line_error(no_words, 3)
    bad_order = await run(roost_cli, "cache", "search", "-o", "@colour")
    assert bad_order.code == 2 and "@created" in bad_order.stderr
    short = await run(roost_cli, "cache", "search", "-F", "title", "eq")
    assert short.code == 2


async def test_sync_errors(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    offline = await new_profile(roost_client, xmpp_server, "carol", connect=False)
    not_connected = await run(roost_cli, "cache", "sync", "-", MICROBLOG, "-p", offline)
    assert "not connected" in one_line_error(not_connected, 5)
    unknown = await run(roost_cli, "cache", "sync", "-", MICROBLOG, "-p", "nobody-at-all")
    one_line_error(unknown, 4)
    unknown_state = await run(roost_cli, "cache", "state", "-", MICROBLOG, "-p", "nobody-at-all")
    one_line_error(unknown_state, 4)
    # A node nobody made.
    profile = await new_profile(roost_client, xmpp_server, "bob")
    nowhere = f"nothing-{uuid.uuid4().hex[:8]}"
    missing = await run(
        roost_cli, "cache", "sync", xmpp_server.pubsub_service, nowhere, "-p", profile
    )
    # The sync ends no_sync (the subscription refused: item-not-found): exit 1, and why.
    assert "ended no_sync" in one_line_error(missing, 1)
    never = await run(
        roost_cli,
        "cache",
        "state",
        xmpp_server.pubsub_service,
        f"{nowhere}-x",
        "-p",
        profile,
        "--json",
    )
    assert never.json()["state"] == "none"


async def test_sync_without_waiting(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    writer = await blog_writer(xmpp_server, 3)
    profile = await new_profile(roost_client, xmpp_server, writer)
    jid = xmpp_server.jid(writer)
    completed = asyncio.Event()

    def on_state(name: str, service: str, node: str, state: str) -> None:
        if (name, service, node, state) == (profile, jid, MICROBLOG, "completed"):
            completed.set()

    stop = await roost_client.on_sync_state_changed(on_state)
    try:
        started = await run(
            roost_cli, "cache", "sync", "-", MICROBLOG, "-p", profile, "--no-wait", "--json"
        )
        assert started.json() == {"started": True}
        await asyncio.wait_for(completed.wait(), 90)
    finally:
        stop()
    state = await run(roost_cli, "cache", "state", "-", MICROBLOG, "-p", profile, "--json")
    assert state.json()["item_count"] == 3


async def test_purge(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    profile, jid = await synced_writer(roost_cli, roost_client, xmpp_server)
    base = ["cache", "purge", "-p", profile, "-n", MICROBLOG]
    # Nothing stored before 2000.
    older = await run(roost_cli, *base, "--older-than", "2000-01-01", "--json")
    assert older.json() == {"removed": 0}
    bad_when = await run(roost_cli, *base, "--older-than", "someday")
    assert bad_when.code == 2 and "--older-than" in bad_when.stderr
    # Everything stored until a moment from now, the node kept (back to none).
    removed = await run(
        roost_cli, *base, "-s", jid, "-t", "blog", "--older-than", str(time.time() + 60), "--json"
    )
    assert removed.json() == {"removed": POSTS}
    state = await run(roost_cli, "cache", "state", "-", MICROBLOG, "-p", profile, "--json")
    assert state.json()["state"] == "none" and state.json()["item_count"] == 0
    resynced = await run(roost_cli, "cache", "sync", "-", MICROBLOG, "-p", profile, "--json")
    assert resynced.json()["item_count"] == POSTS
    gone = await run(roost_cli, *base)
    assert gone.code == 0 and f"removed {POSTS} item(s)" in gone.stdout
    hits = await run(roost_cli, "cache", "search", "-p", profile, "--json")
    assert hits.json() == {"items": []}
    aged = await run(roost_cli, "cache", "purge", "--older-than", "1d", "-p", profile, "--json")
    assert aged.json() == {"removed": 0}


async def test_purge_everything_and_reset_ask_first(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer, tmp_path: Path
) -> None:
    # A daemon of the test's own: these empty the whole cache.
    daemon = roostd_launcher.start()
    cli = RoostCli(daemon.bus_address, cli_env(tmp_path))
    client = await RoostClient.connect(daemon.bus_address)
    try:
        profile, _jid = await synced_writer(cli, client, xmpp_server)
        declined = await run(cli, "cache", "reset", input="n\n")
        assert declined.code == 1 and "nothing done" in declined.stderr
        declined = await run(cli, "cache", "purge", input="\n")
        assert declined.code == 1
        assert len((await run(cli, "cache", "search", "--json")).json()["items"]) == POSTS
        reset = await run(cli, "cache", "reset", input="y\n")
        assert reset.code == 0, reset.stderr
        assert (await run(cli, "cache", "search", "--json")).json() == {"items": []}
        state = await run(cli, "cache", "state", "-", MICROBLOG, "-p", profile, "--json")
        assert state.json()["state"] == "none"
        assert (await run(cli, "cache", "reset", "--yes")).code == 0
        everything = await run(cli, "cache", "purge", "--yes", "--json")
        assert everything.json() == {"removed": 0}
    finally:
        client.close()


def test_analysers(roost_cli: RoostCli) -> None:
    listed = roost_cli("cache", "analysers", "--json").json()
    assert set(listed) == {"analysers"}
    by_name = {a["name"]: a for a in listed["analysers"]}
    assert by_name["microblog"]["node"] == MICROBLOG and by_name["microblog"]["type"] == "blog"
    assert by_name["microblog"]["source"] == "builtin" and by_name["microblog"]["to_sync"]
    assert by_name["microblog_comments"]["subtype"] == "comment"
    table = roost_cli("cache", "analysers")
    assert table.code == 0 and "microblog_comments" in table.stdout and "builtin" in table.stdout


def test_every_level_has_help(roost_cli: RoostCli) -> None:
    for args in (
        ["cache"],
        ["cache", "search"],
        ["cache", "sync"],
        ["cache", "state"],
        ["cache", "purge"],
        ["cache", "reset"],
        ["cache", "analysers"],
        ["blog"],
    ):
        result = roost_cli(*args, "--help")
        assert result.code == 0 and "Usage: roost" in result.stdout, args
