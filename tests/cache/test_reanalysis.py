"""Analyses that follow the analysers: between two runs of the daemon on one database,
a config rule added or edited, a plugin installed, upgraded or removed; Cache.Sync on a
node never analysed; a node recognised by its ``pubsub#type``.

The world (accounts, nodes, items) is made by plain XMPP clients before the daemon
starts, as a person's other clients would have left it. A plugin is a real distribution
in a directory on ``sys.path`` (its ``.dist-info`` with ``entry_points.txt``), found by
``importlib.metadata`` as an installed one is.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from roost.service.backend import Backend
from roost.service.cache.analysers import ENTRY_POINT_GROUP
from roost.service.config import Config
from roost.service.pubsub.model import ItemsReply
from tests.contacts.test_contacts_cache import MICROBLOG, posts, write_blog
from tests.fixtures.backend import WAIT, running_backend
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

NOTE = "urn:example:note"
CALENDAR = "urn:example:calendar"
# The account that creates the component's nodes: an admin on the test Prosody (which
# lets only admins create nodes there), a local user on ejabberd.
CREATOR = "alice"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Return once ``check()`` holds; fail, saying ``what``, after the backend wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


def note(n: int) -> str:
    return f"<note xmlns='{NOTE}'><title>Note {n}</title><body>about tea {n}</body></note>"


async def component_node(server: XmppServer, prefix: str, items: list[tuple[str, str]]) -> str:
    """A node of the server's pubsub component holding ``items``, open to anyone."""
    node = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with XmppPeer(server, CREATOR) as peer:
        await peer.create_node(
            node,
            {"pubsub#access_model": "open", "pubsub#max_items": "100"},
            service=server.pubsub_service,
        )
        await peer.publish_many(node, items, service=server.pubsub_service)
    return node


async def read(backend: Backend, me: str, service: str, node: str) -> ItemsReply:
    return await backend.pubsub.get_items(me, service, node, {})


def parsed(reply: ItemsReply) -> dict[str, Any]:
    """Each item's parsed data by id (None where there is none)."""
    return {i.id: None if i.parsed is None else json.loads(i.parsed) for i in reply.items}


async def cache_subscriptions(backend: Backend, me: str, node: str) -> list[str]:
    return [
        sub.node
        for sub in await backend.db.cache_subscriptions.list_subscriptions(me)
        if sub.node == node
    ]


async def server_subscriptions(backend: Backend, me: str, service: str, node: str) -> list[Any]:
    """The account's subscriptions to the node, as the server lists them."""
    found = await backend.pubsub.get_subscriptions(me, service, node)
    return [s for s in found if s.get("subscription", "subscribed") == "subscribed"]


async def test_a_config_rule_added_then_edited_between_runs(
    xmpp_server: XmppServer, database_url: str
) -> None:
    server = xmpp_server
    service = server.pubsub_service
    (me,) = unique_names("rules", 1)
    await server.register_many([me])
    node = await component_node(server, "notes", [(f"n{n}", note(n)) for n in range(5)])
    db = database_url
    rule = {"name": "notes", "node_prefix": "notes-", "namespace": NOTE, "type": "note"}

    # First run, no rule: the node is read, analysed, and nothing keeps it.
    async with running_backend(db, server, [me]) as (backend, _log):
        await backend.connect(me)
        assert not (await read(backend, me, service, node)).from_cache

        async def analysed() -> bool:
            record = await backend.db.nodes.get_node(me, service, node)
            return record is not None and bool(record.extra.get("analysed"))

        await eventually(analysed, "the node analysed")
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["state"]) == ("", "none")

    # Second run, the rule added: the node is analysed again after start, and kept.
    config = Config(cache_rules=[{**rule, "to_sync": True}])
    async with running_backend(db, server, [me], config) as (backend, log):
        await backend.cache.reanalysis.wait()
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["type"]) == ("notes", "note")
        await backend.connect(me)
        await log.wait_state(service, node, "completed")
        reply = await read(backend, me, service, node)
        assert reply.from_cache and [i.id for i in reply.items] == [f"n{n}" for n in range(5)]
        hits = await backend.pubsub.search({"types": ["note"], "fts": "tea"})
        assert {h["id"] for h in hits} == {f"n{n}" for n in range(5)}
        # A component's node is kept current by a subscription of the cache's own.
        assert await cache_subscriptions(backend, me, node) == [node]
        assert len(await server_subscriptions(backend, me, service, node)) == 1

    # Third run, the rule edited: another type, and not synchronised any more. The node
    # leaves the cache: its items go, and so does the subscription the cache made.
    config = Config(cache_rules=[{**rule, "type": "memo", "to_sync": False}])
    async with running_backend(db, server, [me], config) as (backend, _log):
        await backend.cache.reanalysis.wait()
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["type"], state["state"]) == ("notes", "memo", "none")
        assert state["item_count"] == 0
        assert await backend.pubsub.search({"types": ["note", "memo"]}) == []
        await backend.connect(me)

        async def released() -> bool:
            return not await cache_subscriptions(backend, me, node)

        await eventually(released, "the cache's subscription removed")
        assert await server_subscriptions(backend, me, service, node) == []
        reply = await read(backend, me, service, node)
        assert not reply.from_cache and len(reply.items) == 5


# A plugin, as a distribution: one module, and its metadata with the entry point.
PLUGIN = """
import xml.etree.ElementTree as ET

from roost.service.cache.analysers import Analyser

NS = "{ns}"


def parse(payload: ET.Element) -> dict:
    title = payload.find(f"{{{{{{NS}}}}}}title")
    return {{"title": title.text if title is not None else None, "format": {version}}}


calendar = Analyser(
    name="{name}",
    namespace=NS,
    type="calendar",
    to_sync=True,
    parser=parse,
    parser_version="{version}",
)
"""


class Plugin:
    """A plugin distribution in a directory on ``sys.path``: installed, upgraded and
    removed as pip would leave it between two runs of the daemon."""

    def __init__(self, site: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
        self.site = site
        self.module = f"roost_reanalysis_plugin_{tag}"
        self.analyser = f"calendar_{tag}"
        self.dist = site / f"{self.module}-1.0.dist-info"
        site.mkdir()
        monkeypatch.syspath_prepend(str(site))
        self._monkeypatch = monkeypatch

    def install(self, version: int) -> None:
        source = PLUGIN.format(ns=CALENDAR, name=self.analyser, version=version)
        (self.site / f"{self.module}.py").write_text(textwrap.dedent(source))
        self.dist.mkdir(exist_ok=True)
        (self.dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {self.module}\nVersion: {version}.0\n"
        )
        (self.dist / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\ncalendar = {self.module}:calendar\n"
        )
        self._fresh()

    def remove(self) -> None:
        (self.site / f"{self.module}.py").unlink()
        for path in self.dist.iterdir():
            path.unlink()
        self.dist.rmdir()
        self._fresh()

    def _fresh(self) -> None:
        # A new daemon process imports the module anew.
        self._monkeypatch.delitem(sys.modules, self.module, raising=False)


def event(n: int) -> str:
    return f"<event xmlns='{CALENDAR}'><title>Meeting {n}</title></event>"


async def test_a_plugin_installed_upgraded_and_removed_between_runs(
    xmpp_server: XmppServer, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = xmpp_server
    service = server.pubsub_service
    (me,) = unique_names("plugin", 1)
    await server.register_many([me])
    plugin = Plugin(tmp_path / "site", monkeypatch, uuid.uuid4().hex[:8])
    node = await component_node(server, "agenda", [(f"e{n}", event(n)) for n in range(4)])
    db = database_url

    # Without the plugin: read, analysed, nothing keeps it.
    async with running_backend(db, server, [me]) as (backend, _log):
        await backend.connect(me)
        await read(backend, me, service, node)

        async def analysed() -> bool:
            record = await backend.db.nodes.get_node(me, service, node)
            return record is not None and bool(record.extra.get("analysed"))

        await eventually(analysed, "the node analysed")

    # Installed: the node is analysed again, synchronised and parsed.
    plugin.install(version=1)
    async with running_backend(db, server, [me]) as (backend, log):
        assert any(a["name"] == plugin.analyser for a in backend.pubsub.list_analysers())
        await backend.connect(me)
        await log.wait_state(service, node, "completed")
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["type"]) == (plugin.analyser, "calendar")
        reply = await read(backend, me, service, node)
        assert reply.from_cache
        assert parsed(reply) == {f"e{n}": {"title": f"Meeting {n}", "format": 1} for n in range(4)}

    # Upgraded (its parser's version changed): the stored items are parsed again, from
    # what is stored, with the profile offline: no server is asked.
    plugin.install(version=2)
    async with running_backend(db, server, [me]) as (backend, _log):
        await backend.cache.reanalysis.wait()
        reply = await read(backend, me, service, node)  # offline: the complete copy
        assert reply.from_cache and reply.cache_age is not None
        assert parsed(reply) == {f"e{n}": {"title": f"Meeting {n}", "format": 2} for n in range(4)}
        hits = await backend.pubsub.search({"parsed": [{"path": "format", "op": "eq", "value": 2}]})
        assert {h["id"] for h in hits} == {f"e{n}" for n in range(4)}

    # Removed: no analyser keeps the node any more; it leaves the cache.
    plugin.remove()
    async with running_backend(db, server, [me]) as (backend, _log):
        assert all(a["name"] != plugin.analyser for a in backend.pubsub.list_analysers())
        await backend.cache.reanalysis.wait()
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["state"], state["item_count"]) == ("", "none", 0)
        await backend.connect(me)

        async def released() -> bool:
            return not await cache_subscriptions(backend, me, node)

        await eventually(released, "the cache's subscription removed")
        reply = await read(backend, me, service, node)
        assert not reply.from_cache and all(i.parsed is None for i in reply.items)


async def test_sync_analyses_a_node_never_seen_first(
    xmpp_server: XmppServer, database_url: str
) -> None:
    server = xmpp_server
    (me,) = unique_names("syncfirst", 1)
    await server.register_many([me])
    async with XmppPeer(server, me) as peer:
        await write_blog(peer, server, posts(me, 3))
    # No prefetch: nothing but Cache.Sync makes the blog known to the cache.
    config = Config(prefetch=False)
    async with running_backend(database_url, server, [me], config) as (backend, log):
        owner = server.jid(me)
        await backend.connect(me)
        assert (await backend.pubsub.get_node_state(me, owner, MICROBLOG))["state"] == "none"
        await backend.pubsub.sync(me, owner, MICROBLOG)
        await log.wait_state(owner, MICROBLOG, "completed")
        state = await backend.pubsub.get_node_state(me, owner, MICROBLOG)
        assert (state["analyser"], state["type"], state["item_count"]) == ("microblog", "blog", 3)
        reply = await read(backend, me, owner, MICROBLOG)
        assert reply.from_cache
        titles = {item_id: data["title"] for item_id, data in parsed(reply).items()}
        assert set(titles) == {f"{me}-{n:04d}" for n in range(3)} and all(titles.values())


async def test_a_node_recognised_by_its_pubsub_type(
    xmpp_server: XmppServer, database_url: str
) -> None:
    """Both test servers put ``pubsub#type`` in a component node's meta-data form."""
    server = xmpp_server
    service = server.pubsub_service
    (me,) = unique_names("typed", 1)
    await server.register_many([me])
    node = f"typed-{uuid.uuid4().hex[:10]}"
    other = "urn:example:not-the-type"
    async with XmppPeer(server, CREATOR) as peer:
        await peer.create_node(
            node, {"pubsub#access_model": "open", "pubsub#type": CALENDAR}, service=service
        )
        await peer.publish(node, "x1", f"<thing xmlns='{other}'>tea</thing>", service=service)
    # The rule names a namespace only: the payloads do not carry it, the type does.
    rule = {"name": "by-type", "namespace": CALENDAR, "type": "agenda", "to_sync": True}
    config = Config(cache_rules=[rule])
    async with running_backend(database_url, server, [me], config) as (backend, log):
        await backend.connect(me)
        await read(backend, me, service, node)
        await log.wait_state(service, node, "completed")
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["type"]) == ("by-type", "agenda")
        record = await backend.db.nodes.get_node(me, service, node)
        assert record is not None
        assert record.extra["pubsub_type"] == CALENDAR
        assert record.extra["seen_namespaces"] == [other]
