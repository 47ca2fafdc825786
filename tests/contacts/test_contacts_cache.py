"""The cache follows the roster: contacts' nodes made before roostd started are cached
without anyone reading them first; a contact lost is no longer served; a non-contact's
open node is kept current by a subscription of Roost's own, removed when it leaves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from roost.service.backend import Backend
from roost.service.errors import XmppError
from roost.service.events import ItemsEvent, SyncStateChanged
from roost.service.pubsub.model import ItemsReply
from tests.fixtures.backend import EventLog, running_backend
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

MICROBLOG = "urn:xmpp:microblog:0"
ATOM = "http://www.w3.org/2005/Atom"
OPEN = {"pubsub#access_model": "open"}
# Posts per contact in the twenty-contacts test: Prosody's file storage makes filling a
# node quadratic, so the suite keeps it small; bench/contacts.py measures 200.
BLOG_SIZE = 50


def blog_options(server: XmppServer, **extra: str) -> dict[str, str]:
    """Publish options of a blog: PEP nodes keep one item unless told; Prosody takes the
    limit as a publish option, ejabberd refuses it there (see :func:`write_blog`)."""
    options = {"pubsub#max_items": "1000"} if server.kind == "prosody" else {}
    return {**options, **extra}


async def write_blog(
    peer: XmppPeer,
    server: XmppServer,
    items: list[tuple[str, str]],
    keep: str = "1000",
    **extra: str,
) -> None:
    """A blog of ``items`` on the peer's PEP service, keeping ``keep`` posts, as a
    person's client sets it up."""
    options = blog_options(server, **extra)
    if "pubsub#max_items" in options:
        options["pubsub#max_items"] = keep
    first, *rest = items
    await peer.publish(MICROBLOG, first[0], first[1], options)
    if server.kind == "ejabberd":
        xep_0004 = peer.client.plugin["xep_0004"]
        form = xep_0004.make_form(ftype="submit")
        form.add_field(
            var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config"
        )
        form.add_field(var="pubsub#max_items", value=keep)
        await peer.client.plugin["xep_0060"].set_node_config(peer.jid, MICROBLOG, form, timeout=30)
    if rest:
        await peer.publish_many(MICROBLOG, rest, options)


def post(author: str, n: int) -> str:
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{author}-{n}</id><title>{author} post {n}</title>"
        f"<content type='text'>Body {n} of {author}</content>"
        f"<published>2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z</published>"
        f"<updated>2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z</updated></entry>"
    )


def posts(author: str, count: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"{author}-{n:04d}", post(author, n)) for n in range(start, start + count)]


async def blog(backend: Backend, me: str, owner: str, use_cache: bool = True) -> ItemsReply:
    return await backend.pubsub.get_items(me, owner, MICROBLOG, {"use_cache": use_cache})


def ids(reply: ItemsReply) -> list[str]:
    return [item.id for item in reply.items]


async def same_as_server(backend: Backend, me: str, owner: str) -> ItemsReply:
    cached = await blog(backend, me, owner)
    server = await blog(backend, me, owner, use_cache=False)
    assert cached.from_cache and not server.from_cache
    assert ids(cached) == ids(server)
    assert [i.xml for i in cached.items] == [i.xml for i in server.items]
    return cached


async def wait_item(log: EventLog, owner: str, item_id: str) -> None:
    await log.wait_for(
        lambda e: (
            isinstance(e, ItemsEvent)
            and e.service == owner
            and any(raw["id"] == item_id for raw in e.items)
        ),
        f"the notification of {item_id}",
    )


async def test_a_contacts_blog_is_cached_before_anyone_reads_it_and_stays_current(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, friend = unique_names("reader", 2)
    await xmpp_server.register_many([me, friend])
    await befriend(xmpp_server, me, friend)
    owner = xmpp_server.jid(friend)
    async with XmppPeer(xmpp_server, friend) as pf:
        await write_blog(pf, xmpp_server, posts(friend, 5))

    db = tmp_path / "roost.sqlite"
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        # No GetItems: the notification sent at login is enough to prefetch the node.
        await log.wait_state(owner, MICROBLOG, "completed")
        first = await same_as_server(backend, me, owner)
        assert len(first.items) == 5
        state = await backend.cache.get_node_state(me, owner, MICROBLOG)
        assert state["current"] and state["analyser"] == "microblog"
        async with XmppPeer(xmpp_server, friend) as pf:
            await pf.wait_online(xmpp_server.jid(me))
            await pf.publish(
                MICROBLOG, f"{friend}-new", post(friend, 99), blog_options(xmpp_server)
            )
            await wait_item(log, owner, f"{friend}-new")
        assert ids(await same_as_server(backend, me, owner))[-1] == f"{friend}-new"

    # After a restart the node is resynchronised by itself and served again.
    async with running_backend(db, xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        await log.wait_state(owner, MICROBLOG, "completed")
        assert len((await same_as_server(backend, me, owner)).items) == 6


async def test_a_removed_contacts_blog_is_no_longer_served_from_the_cache(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, friend = unique_names("unfriend", 2)
    await xmpp_server.register_many([me, friend])
    await befriend(xmpp_server, me, friend)
    owner = xmpp_server.jid(friend)
    async with XmppPeer(xmpp_server, friend) as pf:
        await write_blog(pf, xmpp_server, posts(friend, 3))
    async with running_backend(tmp_path / "r.sqlite", xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        await log.wait_state(owner, MICROBLOG, "completed")
        await same_as_server(backend, me, owner)
        seen = len(log.events)
        # The person removes the contact with another client.
        async with XmppPeer(xmpp_server, me) as pm:
            await pm.remove_contact(owner)
        await log.wait_for(
            lambda e: (
                isinstance(e, SyncStateChanged) and e.service == owner and e.state == "no_sync"
            ),
            "the lost contact's node leaving the cache",
            after=seen,
        )
        state = await backend.cache.get_node_state(me, owner, MICROBLOG)
        assert state["state"] == "no_sync" and not state["current"]
        assert "presence" in state["reason"]
        # Asked again, the server answers, and it no longer lets this account read.
        with pytest.raises(XmppError) as refused:
            await blog(backend, me, owner)
        assert refused.value.condition in (
            "forbidden",
            "not-authorized",
            "presence-subscription-required",
        )


@pytest.mark.parametrize("xmpp_server", ["prosody"], indirect=True)
async def test_a_non_contacts_open_blog_is_kept_current_and_its_subscription_removed(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, stranger = unique_names("open", 2)
    await xmpp_server.register_many([me, stranger])
    owner = xmpp_server.jid(stranger)
    async with XmppPeer(xmpp_server, stranger) as ps:
        await write_blog(ps, xmpp_server, posts(stranger, 4), **OPEN)
    async with running_backend(tmp_path / "r.sqlite", xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        first = await blog(backend, me, owner)
        assert not first.from_cache and len(first.items) == 4
        await log.wait_state(owner, MICROBLOG, "completed")
        await same_as_server(backend, me, owner)
        async with XmppPeer(xmpp_server, stranger) as ps:
            subscribers = await ps.node_subscriptions(owner, MICROBLOG)
            assert [s["jid"].split("/")[0] for s in subscribers] == [xmpp_server.jid(me)]
            await ps.publish(
                MICROBLOG, f"{stranger}-new", post(stranger, 50), blog_options(xmpp_server, **OPEN)
            )
            await wait_item(log, owner, f"{stranger}-new")
            assert ids(await same_as_server(backend, me, owner))[-1] == f"{stranger}-new"

            removed = await backend.cache.purge({"services": [owner], "nodes": [MICROBLOG]})
            assert removed == 5
            assert await ps.node_subscriptions(owner, MICROBLOG) == []
        assert not (await blog(backend, me, owner)).from_cache


@pytest.mark.timeout(600)
async def test_twenty_contacts_blogs_are_all_cached_after_connect(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    me, *friends = unique_names("popular", 21)
    await xmpp_server.register_many([me, *friends])
    t1 = time.monotonic()
    for friend in friends:
        await befriend(xmpp_server, me, friend)
    t2 = time.monotonic()

    async def fill(friend: str) -> None:
        async with XmppPeer(xmpp_server, friend) as pf:
            await write_blog(pf, xmpp_server, posts(friend, BLOG_SIZE))

    for start in range(0, len(friends), 5):
        await asyncio.gather(*(fill(f) for f in friends[start : start + 5]))
    t3 = time.monotonic()
    print(f"\nworld: register {t1 - t0:.1f} s, befriend {t2 - t1:.1f} s, fill {t3 - t2:.1f} s")

    async with running_backend(tmp_path / "r.sqlite", xmpp_server, [me]) as (backend, log):
        started = time.monotonic()
        await backend.connect(me)
        for friend in friends:
            await log.wait_state(xmpp_server.jid(friend), MICROBLOG, "completed")
        elapsed = time.monotonic() - started
        print(
            f"\n{xmpp_server.kind}: 20 contacts' blogs of {BLOG_SIZE} items cached {elapsed:.1f} s "
            "after Connect"
        )
        for friend in friends:
            reply = await same_as_server(backend, me, xmpp_server.jid(friend))
            assert len(reply.items) == BLOG_SIZE


async def test_a_contacts_blog_that_keeps_ten_posts_stays_equal_to_the_server(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    me, friend = unique_names("limited", 2)
    await xmpp_server.register_many([me, friend])
    await befriend(xmpp_server, me, friend)
    owner = xmpp_server.jid(friend)
    ten = {k: "10" for k in blog_options(xmpp_server)}  # Prosody checks the limit it was given
    async with XmppPeer(xmpp_server, friend) as pf:
        await write_blog(pf, xmpp_server, posts(friend, 5), keep="10")
    async with running_backend(tmp_path / "r.sqlite", xmpp_server, [me]) as (backend, log):
        await backend.connect(me)
        await log.wait_state(owner, MICROBLOG, "completed")
        async with XmppPeer(xmpp_server, friend) as pf:
            await pf.wait_online(xmpp_server.jid(me))
            for item_id, xml in posts(friend, 30, start=5):
                await pf.publish(MICROBLOG, item_id, xml, ten)
            await wait_item(log, owner, f"{friend}-0034")
        # The server trims to ten and tells nobody: Roost checks the node after the burst
        # and follows. Until then it may serve more; it must converge, and stay current.
        deadline = time.monotonic() + 60
        while True:
            cached = await blog(backend, me, owner)
            server = await blog(backend, me, owner, use_cache=False)
            if cached.from_cache and ids(cached) == ids(server):
                break
            assert time.monotonic() < deadline, f"{len(cached.items)} cached, {len(server.items)}"
            await asyncio.sleep(0.2)
        assert len(server.items) == 10
        async with XmppPeer(xmpp_server, friend) as pf:
            await pf.wait_online(xmpp_server.jid(me))
            await pf.publish(MICROBLOG, f"{friend}-late", post(friend, 77), ten)
            await wait_item(log, owner, f"{friend}-late")
        # The limit is known now: the next publication is followed at once.
        after = await same_as_server(backend, me, owner)
        assert len(after.items) == 10 and ids(after)[-1] == f"{friend}-late"
