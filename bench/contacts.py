"""Contacts benchmark: how long after Connect a person's contacts' blogs are all cached.

The world is built first, as it exists for a real user, by independent XMPP clients: an
account with 20 contacts (mutual presence subscriptions), each with a 200-post microblog.
Then a Roost backend (as roostd runs it) on a new SQLite file connects the account, and
nothing reads anything: prefetch must bring every contact's blog to ``completed``.

Reported, per server (Prosody, ejabberd): the time from Connect to the last node
``completed`` against a baseline measured in the same run, a plain client fetching the 20
blogs one after the other, its login included (what reading them at login would cost
without a cache). The
target is at most 3 times the baseline: the cache's copy must be ready about when a
person could have read the blogs once. Prints one JSON object a line; progress on stderr.
Set ``ROOST_BENCH_SMALL=1`` for 5 contacts of 50 posts, ``ROOST_BENCH_SERVERS=ejabberd``
(or ``prosody``) for one server only.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit
from roost.service.events import SyncStateChanged
from tests.contacts.test_contacts_cache import MICROBLOG, posts, write_blog
from tests.fixtures.backend import running_backend
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import EjabberdServer, ProsodyServer, XmppServer, free_port

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
CONTACTS = 5 if SMALL else 20
POSTS = 50 if SMALL else 200
TARGET_RATIO = 3.0


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[contacts] {message}", file=sys.stderr, flush=True)


async def build_world(server: XmppServer) -> tuple[str, list[str]]:
    """An account and its contacts, each with a blog; made before Roost starts."""
    me, *friends = unique_names("bench", CONTACTS + 1)
    await server.register_many([me, *friends])
    for friend in friends:
        await befriend(server, me, friend)

    async def fill(friend: str) -> None:
        async with XmppPeer(server, friend) as peer:
            await write_blog(peer, server, posts(friend, POSTS))

    for start in range(0, len(friends), 5):
        await asyncio.gather(*(fill(f) for f in friends[start : start + 5]))
    return me, friends


async def bare_fetch(server: XmppServer, me: str, friends: list[str]) -> float:
    """Seconds a plain client takes to log in and fetch every contact's blog, one after
    the other."""
    started = time.perf_counter()
    async with XmppPeer(server, me) as peer:
        for friend in friends:
            items = await peer.items(MICROBLOG, server.jid(friend))
            assert len(items) == POSTS, f"{friend}: {len(items)} items"
        return time.perf_counter() - started


async def cached_after_connect(server: XmppServer, me: str, friends: list[str], db: Path) -> float:
    """Seconds from Connect until every contact's blog is ``completed`` in the cache."""
    async with running_backend(db, server, [me]) as (backend, log):
        owners = {server.jid(f) for f in friends}
        started = time.perf_counter()
        await backend.connect(me)
        for owner in sorted(owners):
            await log.wait_state(owner, MICROBLOG, "completed")
        elapsed = time.perf_counter() - started
        for owner in sorted(owners):
            reply = await backend.pubsub.get_items(me, owner, MICROBLOG, {})
            assert reply.from_cache and len(reply.items) == POSTS, owner
        done = {e.service for e in log.of(SyncStateChanged) if e.state == "completed"}
        assert owners <= done
        return elapsed


async def measure(server: XmppServer, workdir: Path) -> None:
    progress(f"{server.kind}: building {CONTACTS} contacts with {POSTS} posts each")
    me, friends = await build_world(server)
    baseline = await bare_fetch(server, me, friends)
    cached = await cached_after_connect(server, me, friends, workdir / f"{server.kind}.sqlite")
    emit(
        "contacts",
        f"{server.kind}: {CONTACTS} contacts' blogs of {POSTS} cached after Connect",
        cached,
        "s",
        baseline=baseline,
        ratio_at_most=TARGET_RATIO,
    )


def main() -> None:
    """Build the worlds on both servers and measure."""
    if os.environ.get("ROOST_BENCH_LOG"):
        import logging

        logging.basicConfig(
            level=logging.INFO, format="%(relativeCreated)8.0f %(name)s %(message)s"
        )
        logging.getLogger("slixmpp").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="roost-bench-contacts-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        kinds = os.environ.get("ROOST_BENCH_SERVERS", "prosody,ejabberd").split(",")
        for kind, cls in (("prosody", ProsodyServer), ("ejabberd", EjabberdServer)):
            if kind not in kinds:
                continue
            data = workdir / kind
            data.mkdir(mode=0o755)
            server = cls(kind=kind, data_dir=data, port=free_port())
            try:
                server.setup()
                if kind == "prosody":
                    server.start()
                asyncio.run(measure(server, workdir))
            finally:
                server.stop()


if __name__ == "__main__":
    main()
