"""``roost blog``: a contact's microblog, and the account's own, read through roostd from
posts published before the daemon connected."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from roost.bridge.client import RoostClient
from tests.cli.conftest import RoostCli
from tests.cli.pubsub_helpers import (
    BLOG_NODE_CONFIG,
    MICROBLOG,
    atom_entry,
    new_profile,
    one_line_error,
    run,
)
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

# The posts, oldest first: plain text, an item no parser reads, HTML, an author with tags,
# and the newest.
POSTS = [
    ("post-1", atom_entry(1, title="First post", content="First words")),
    ("post-2", "<note xmlns='urn:example:notes'><line>plain words only</line></note>"),
    (
        "post-3",
        atom_entry(
            3,
            title="Markup",
            content="<p>Hello <b>bold</b> world</p><p>Second para</p>",
            content_type="html",
        ),
    ),
    (
        "post-4",
        atom_entry(4, title="Signed", author="Writer Person", tags=("travel", "food")),
    ),
    ("post-5", atom_entry(5, title="Newest post", content="Latest news")),
]


@dataclass
class Blog:
    """A writer with a blog and a reader who is their contact, both with profiles."""

    writer_jid: str
    writer: str
    reader: str


async def make_blog(server: XmppServer, client: RoostClient) -> Blog:
    """The world first (accounts, friendship, posts in order), then the profiles."""
    writer, reader = unique_names("writer", 1) + unique_names("reader", 1)
    await server.register_many([writer, reader])
    await befriend(server, writer, reader)
    async with XmppPeer(server, writer) as peer:
        await peer.create_node(MICROBLOG, BLOG_NODE_CONFIG)
        for item_id, xml in POSTS:
            await peer.publish(MICROBLOG, item_id, xml)
    return Blog(
        server.jid(writer),
        await new_profile(client, server, writer),
        await new_profile(client, server, reader),
    )


@pytest.fixture
async def blog(xmpp_server: XmppServer, roost_client: RoostClient) -> Blog:
    return await make_blog(xmpp_server, roost_client)


async def test_a_contacts_blog_page_by_page(roost_cli: RoostCli, blog: Blog) -> None:
    base = ["blog", blog.writer_jid, "-p", blog.reader, "--max", "2", "--json"]
    first = (await run(roost_cli, *base)).json()
    assert set(first) == {"jid", "node", "posts", "count", "complete", "next", "from_cache"}
    assert first["jid"] == blog.writer_jid and first["node"] == MICROBLOG
    assert [p["id"] for p in first["posts"]] == ["post-5", "post-4"]
    assert first["count"] == 5 and first["complete"] is False and first["next"]
    newest, signed = first["posts"]
    assert newest["title"] == "Newest post" and newest["content"] == "Latest news"
    assert newest["published"] == "2026-01-01T00:05:00Z"
    assert newest["published_ts"] == 1767225900.0
    assert signed["author"] == "Writer Person" and signed["tags"] == ["travel", "food"]

    second = (await run(roost_cli, *base, "--more", first["next"])).json()
    assert [p["id"] for p in second["posts"]] == ["post-3", "post-2"]
    markup, raw = second["posts"]
    assert markup["content"] == "Hello bold world\n\nSecond para"
    # No parsed data: the payload's text, never its XML.
    assert raw["title"] == "" and raw["content"] == "plain words only"
    assert raw["author_jid"] == blog.writer_jid

    last = (await run(roost_cli, *base, "--more", second["next"])).json()
    assert [p["id"] for p in last["posts"]] == ["post-1"]
    assert last["complete"] is True and last["next"] is None
    for page in (first, second, last):
        for post in page["posts"]:
            assert "<" not in post["content"] and "xmlns" not in post["content"]


async def test_reading_without_a_terminal_prints_one_page_and_the_way_on(
    roost_cli: RoostCli, blog: Blog
) -> None:
    shown = await run(roost_cli, "blog", blog.writer_jid, "-p", blog.reader, "--max", "3")
    assert shown.code == 0, shown.stderr
    out = shown.stdout
    assert out.index("Newest post") < out.index("Signed") < out.index("Markup")
    assert "Latest news" in out and "Writer Person" in out and "#travel" in out
    assert "Hello bold world" in out and "Second para" in out
    assert "2026-01-01" in out
    assert "First post" not in out
    for xml in ("<entry", "<item", "xmlns", "<p>", "<b>", "</"):
        assert xml not in out
    more = [line for line in out.splitlines() if line.startswith("more: ")]
    assert len(more) == 1
    command = more[0].removeprefix("more: ").split()
    assert command[:6] == ["roost", "blog", blog.writer_jid, "-p", blog.reader, "--max"]
    token = command[-1]
    rest = await run(roost_cli, *command[1:])
    assert rest.code == 0, rest.stderr
    assert "plain words only" in rest.stdout and "First post" in rest.stdout
    assert "(the end of the blog)" in rest.stdout and "more: " not in rest.stdout
    assert "Newest post" not in rest.stdout and token.startswith("r1.")


async def test_own_blog_without_a_jid(roost_cli: RoostCli, blog: Blog) -> None:
    own = (await run(roost_cli, "blog", "-p", blog.writer, "--json")).json()
    assert own["jid"] == "" and own["complete"] is True and own["next"] is None
    assert [p["id"] for p in own["posts"]] == [f"post-{n}" for n in range(5, 0, -1)]
    shown = await run(roost_cli, "blog", "-p", blog.writer, "--no-pager")
    assert shown.code == 0 and "Newest post" in shown.stdout and "First post" in shown.stdout


async def test_blog_errors(
    roost_cli: RoostCli, roost_client: RoostClient, xmpp_server: XmppServer, blog: Blog
) -> None:
    unknown = await run(roost_cli, "blog", blog.writer_jid, "-p", "nobody-at-all")
    assert "nobody-at-all" in one_line_error(unknown, 4)
    (someone,) = unique_names("quiet", 1)
    await xmpp_server.register_many([someone])
    offline = await new_profile(roost_client, xmpp_server, someone, connect=False)
    not_connected = await run(roost_cli, "blog", blog.writer_jid, "-p", offline)
    assert "offline" in one_line_error(not_connected, 5)
    # Someone who never blogged.
    no_blog = await run(roost_cli, "blog", xmpp_server.jid(someone), "-p", blog.reader)
    assert "Xmpp." in one_line_error(no_blog, 8)
    bad_token = await run(roost_cli, "blog", blog.writer_jid, "-p", blog.reader, "--more", "x")
    one_line_error(bad_token, 3)
    bad_jid = await run(roost_cli, "blog", "a@b/c", "-p", blog.reader)
    one_line_error(bad_jid, 3)
    assert (await run(roost_cli, "blog", "--max", "0")).code == 2
