"""The analysers registry: matching, order, sources (built in, entry points, config rules)."""

from __future__ import annotations

import functools
import logging
import textwrap
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from roost.service.cache.analysers import (
    ENTRY_POINT_GROUP,
    Analyser,
    AnalyserRegistry,
    AnalysisContext,
)
from roost.service.cache.microblog import ATOM_NS
from roost.service.errors import Conflict, InvalidArgument, NotFound

BLOG = "urn:xmpp:microblog:0"


def ctx(node: str, *namespaces: str, node_type: str | None = None) -> AnalysisContext:
    return AnalysisContext(
        profile="juliet",
        service="juliet@example.org",
        node=node,
        node_type=node_type,
        payload_namespaces=frozenset(namespaces),
        is_pep=True,
    )


def names(registry: AnalyserRegistry) -> list[str]:
    return [a.name for a in registry.analysers()]


# Built-ins


def test_builtins_describe_themselves() -> None:
    described = {d["name"]: d for d in AnalyserRegistry().describe()}
    assert described["microblog"] == {
        "name": "microblog",
        "node": BLOG,
        "node_prefix": "",
        "namespace": ATOM_NS,
        "type": "blog",
        "subtype": "",
        "to_sync": True,
        "has_parser": True,
        "has_match": False,
        "indexed_keys": ["published_ts", "updated_ts", "author_jid", "title"],
        "refresh_interval": 0.0,
        "prefetch": True,
        "parser_version": "roost.service.cache.microblog.parse_microblog_entry:1",
        "source": "builtin",
    }
    comments = described["microblog_comments"]
    assert comments["node_prefix"] == "urn:xmpp:microblog:0:comments/"
    assert (comments["type"], comments["subtype"], comments["to_sync"]) == ("blog", "comment", True)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (ctx(BLOG, ATOM_NS), "microblog"),
        (ctx(BLOG), "microblog"),  # empty or not yet fetched: the name is enough
        (ctx(BLOG, node_type=ATOM_NS), "microblog"),
        (ctx(BLOG, "urn:example:other"), None),  # the name lies: payloads say otherwise
        (ctx("urn:xmpp:microblog:0:comments/abc", ATOM_NS), "microblog_comments"),
        (ctx("urn:xmpp:microblog:0:comments/"), "microblog_comments"),
        (ctx("urn:xmpp:microblog:0:comment", ATOM_NS), None),
        (ctx("urn:xmpp:microblog:00", ATOM_NS), None),
        (ctx("eu.example.events", ATOM_NS), None),
    ],
)
def test_builtin_matching(context: AnalysisContext, expected: str | None) -> None:
    found = AnalyserRegistry().match(context)
    assert (found.name if found else None) == expected


def test_builtin_parser_parses_entries() -> None:
    analyser = AnalyserRegistry().match(ctx(BLOG))
    assert analyser is not None and analyser.parser is not None
    entry = ET.fromstring(f'<entry xmlns="{ATOM_NS}"><title>Hi</title></entry>')
    assert analyser.parser(entry)["title"] == "Hi"


def test_registry_without_builtins() -> None:
    registry = AnalyserRegistry(builtins=False)
    assert registry.analysers() == []
    assert registry.match(ctx(BLOG, ATOM_NS)) is None


# Matching rules of one analyser


def test_namespace_alone_must_be_seen() -> None:
    events = Analyser(name="events", namespace="urn:example:event", type="event")
    assert events.matches(ctx("any", "urn:example:event"))
    assert events.matches(ctx("any", node_type="urn:example:event"))
    assert not events.matches(ctx("any"))
    assert not events.matches(ctx("any", "urn:example:other"))


def test_every_given_criterion_must_hold() -> None:
    analyser = Analyser(name="x", node_prefix="urn:example:", match=lambda c: c.is_pep, type="t")
    assert analyser.matches(ctx("urn:example:1"))
    assert not analyser.matches(ctx("other:1"))
    not_pep = AnalysisContext(profile="p", service="pubsub.example.org", node="urn:example:1")
    assert not analyser.matches(not_pep)


def test_a_failing_match_is_no_match_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(context: AnalysisContext) -> bool:
        raise RuntimeError("boom")

    registry = AnalyserRegistry()
    registry.register_analyser(Analyser(name="broken", match=broken, type="t"))
    with caplog.at_level(logging.ERROR, logger="roost.service.cache.analysers"):
        found = registry.match(ctx(BLOG))
    # The broken plugin comes first but the built-in still answers.
    assert found is not None and found.name == "microblog"
    assert "broken" in caplog.text and "boom" in caplog.text


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "a", "node": "n", "node_prefix": "n"}, "not both"),
        ({"name": "a"}, "matches nothing"),
        ({"name": "a", "node_prefix": ""}, "must not be empty"),
        ({"name": "a", "node": "n", "refresh_interval": 0}, "refresh_interval"),
        ({"name": "a", "node": "n", "refresh_interval": float("inf")}, "refresh_interval"),
        ({"name": "a", "node": "n", "refresh_interval": True}, "refresh_interval"),
    ],
)
def test_invalid_analysers_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        Analyser(**fields)


# Order and registration


def test_order_is_config_then_plugins_then_builtins() -> None:
    registry = AnalyserRegistry()
    registry.register_analyser(Analyser(name="plugin-blog", node=BLOG, type="mine"))
    registry.load_config_rules([{"name": "user-blog", "node": BLOG, "type": "user"}])
    assert names(registry) == ["user-blog", "plugin-blog", "microblog", "microblog_comments"]
    assert [d["source"] for d in registry.describe()] == ["config", "plugin", "builtin", "builtin"]
    found = registry.match(ctx(BLOG))
    assert found is not None and found.name == "user-blog"
    registry.unregister("user-blog")
    found = registry.match(ctx(BLOG))
    assert found is not None and found.name == "plugin-blog"


def test_position_is_within_the_source() -> None:
    registry = AnalyserRegistry()
    for name in ("a", "b", "c"):
        registry.register_analyser(Analyser(name=name, node=name, type="t"))
    registry.register_analyser(Analyser(name="first", node="f", type="t"), position=0)
    registry.register_analyser(Analyser(name="before-c", node="x", type="t"), position=-1)
    registry.register_analyser(Analyser(name="far", node="y", type="t"), position=99)
    plugins = [d["name"] for d in registry.describe() if d["source"] == "plugin"]
    assert plugins == ["first", "a", "b", "before-c", "c", "far"]
    # Position 0 of the plugins never jumps ahead of the config rules.
    registry.load_config_rules([{"name": "rule", "node": "r"}])
    assert names(registry)[:2] == ["rule", "first"]
    assert names(registry)[-2:] == ["microblog", "microblog_comments"]


def test_duplicate_names_conflict_across_sources() -> None:
    registry = AnalyserRegistry()
    with pytest.raises(Conflict, match="microblog"):
        registry.register_analyser(Analyser(name="microblog", node="other", type="t"))
    registry.register_analyser(Analyser(name="mine", node="n", type="t"))
    with pytest.raises(Conflict, match="mine"):
        registry.register_analyser(Analyser(name="mine", node="m", type="t"))
    assert names(registry).count("mine") == 1


def test_register_refuses_other_objects() -> None:
    with pytest.raises(InvalidArgument, match="expected an Analyser"):
        AnalyserRegistry().register_analyser({"name": "x"})  # type: ignore[arg-type]


def test_unregister_and_get() -> None:
    registry = AnalyserRegistry()
    removed = registry.unregister("microblog_comments")
    assert removed.subtype == "comment"
    assert registry.get("microblog_comments") is None
    assert registry.match(ctx("urn:xmpp:microblog:0:comments/1")) is None
    with pytest.raises(NotFound):
        registry.unregister("microblog_comments")
    with pytest.raises(NotFound):
        registry.source_of("nope")


# Config rules

CONFIG = """
[cache]
max_items_per_node = 100

[[cache.rules]]
name = "events"
namespace = "urn:example:event"
type = "event"
to_sync = true

[[cache.rules]]
name = "news"
node_prefix = "eu.example.news/"
type = "news"
subtype = "headline"
refresh_interval = 900
"""


def test_config_rules_from_toml() -> None:
    rules = tomllib.loads(CONFIG)["cache"]["rules"]
    registry = AnalyserRegistry()
    loaded = registry.load_config_rules(rules)
    assert [a.name for a in loaded] == ["events", "news"]
    news = registry.match(ctx("eu.example.news/today"))
    assert news is not None
    assert (news.type, news.subtype, news.to_sync, news.refresh_interval) == (
        "news",
        "headline",
        False,
        900,
    )
    assert news.parser is None
    events = registry.match(ctx("cal", "urn:example:event"))
    assert events is not None and events.to_sync is True
    assert registry.source_of("events") == "config"


def test_reloading_config_rules_replaces_them() -> None:
    registry = AnalyserRegistry()
    registry.load_config_rules([{"name": "one", "node": "a"}, {"name": "two", "node": "b"}])
    registry.load_config_rules([{"name": "two", "node": "c"}])
    assert names(registry)[0] == "two"
    assert "one" not in names(registry)
    two = registry.get("two")
    assert two is not None and two.node == "c"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"node": "a"}], "cache rule 0: name is required"),
        ([{"name": "a", "node": "a"}, {"name": "b"}], r"cache rule 1 \('b'\): give node"),
        ([{"name": "a", "nodes": "a"}], r"cache rule 0 \('a'\): unknown key\(s\) nodes"),
        ([{"name": "a", "node": 3}], "node must be a string"),
        ([{"name": "a", "node": "a", "to_sync": "yes"}], "to_sync must be true or false"),
        ([{"name": "a", "node": "a", "refresh_interval": -5}], r"\('a'\): refresh_interval"),
        ([{"name": "a", "node": "a", "node_prefix": "a"}], r"\('a'\): give node or node_prefix"),
        ([{"name": "a", "node": "a"}, {"name": "a", "node": "b"}], "used by rule 0 too"),
        ([{"name": "microblog", "node": "a"}], "taken by a builtin analyser"),
        (["not a table"], "cache rule 0: expected a table"),
    ],
)
def test_bad_config_rules(rules: list[Any], message: str) -> None:
    registry = AnalyserRegistry()
    registry.load_config_rules([{"name": "kept", "node": "k"}])
    with pytest.raises(InvalidArgument, match=message):
        registry.load_config_rules(rules)
    # A bad file changes nothing.
    assert names(registry) == ["kept", "microblog", "microblog_comments"]


# Entry points: a real distribution on sys.path, found by importlib.metadata.

PLUGIN_MODULE = """
from roost.service.cache.analysers import Analyser

events = Analyser(name="{prefix}events", namespace="urn:example:event", type="event")


def several():
    return [
        Analyser(name="{prefix}a", node="a", type="t"),
        Analyser(name="{prefix}b", node="b", type="t"),
    ]


def broken():
    raise RuntimeError("plugin factory exploded")


def wrong():
    return {{"name": "not an analyser"}}


def clash():
    return Analyser(name="microblog", node="x", type="t")
"""


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    module = f"roost_test_plugin_{prefix}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_MODULE.format(prefix=prefix))
    dist = tmp_path / f"roost_test_plugin_{prefix}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: roost-test-plugin-{prefix}\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [{ENTRY_POINT_GROUP}]
            {prefix}1_events = {module}:events
            {prefix}2_several = {module}:several
            {prefix}3_broken = {module}:broken
            {prefix}4_wrong = {module}:wrong
            {prefix}5_clash = {module}:clash
            {prefix}6_missing = {module}_gone:nothing
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_entry_points_load_and_broken_plugins_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_plugin(tmp_path, monkeypatch, "p1")
    registry = AnalyserRegistry()
    with caplog.at_level(logging.ERROR, logger="roost.service.cache.analysers"):
        added = registry.load_entry_points()
    assert [a.name for a in added] == ["p1events", "p1a", "p1b"]
    assert names(registry) == ["p1events", "p1a", "p1b", "microblog", "microblog_comments"]
    assert {d["source"] for d in registry.describe()[:3]} == {"plugin"}
    for skipped, why in [
        ("p13_broken", "plugin factory exploded"),
        ("p14_wrong", "got dict"),
        ("p15_clash", "'microblog' is registered already"),
        ("p16_missing", "No module named"),
    ]:
        line = next((r.getMessage() for r in caplog.records if skipped in r.getMessage()), "")
        assert why in line, (skipped, caplog.text)
    found = registry.match(ctx("calendar", "urn:example:event"))
    assert found is not None and found.name == "p1events"


# Setup functions: a plugin given the registry


SETUP_MODULE = """
from roost.service.cache.analysers import Analyser


def setup(registry):
    registry.register_analyser(Analyser(name="{prefix}late", node="late", type="t"))
    registry.register_analyser(
        Analyser(name="{prefix}early", node="early", type="t"), position=0
    )


def half(registry):
    registry.register_analyser(Analyser(name="{prefix}half", node="half", type="t"))
    raise RuntimeError("setup exploded half-way")


def returns(registry):
    registry.register_analyser(Analyser(name="{prefix}returned", node="r", type="t"))
    return [Analyser(name="{prefix}twice", node="r", type="t")]


def factory(optional=None):
    return Analyser(name="{prefix}factory", node="f", type="t")
"""


def install_setup_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    module = f"roost_test_setup_{prefix}"
    (tmp_path / f"{module}.py").write_text(SETUP_MODULE.format(prefix=prefix))
    dist = tmp_path / f"roost_test_setup_{prefix}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: roost-test-setup-{prefix}\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [{ENTRY_POINT_GROUP}]
            {prefix}1_setup = {module}:setup
            {prefix}2_half = {module}:half
            {prefix}3_returns = {module}:returns
            {prefix}4_factory = {module}:factory
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_entry_point_may_be_a_setup_function_given_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_setup_plugin(tmp_path, monkeypatch, "s1")
    registry = AnalyserRegistry()
    with caplog.at_level(logging.ERROR, logger="roost.service.cache.analysers"):
        added = registry.load_entry_points()
    # A setup function registers its own (and may place them); a callable whose one
    # argument has a default is a factory, as before.
    assert [a.name for a in added] == ["s1early", "s1late", "s1factory"]
    assert names(registry) == ["s1early", "s1late", "s1factory", "microblog", "microblog_comments"]
    # One that fails half-way, or returns analysers instead of registering them, leaves
    # nothing behind.
    assert registry.get("s1half") is None and registry.get("s1returned") is None
    for skipped, why in [
        ("s12_half", "setup exploded half-way"),
        ("s13_returns", "returns None, not list"),
    ]:
        line = next((r.getMessage() for r in caplog.records if skipped in r.getMessage()), "")
        assert why in line, (skipped, caplog.text)


# Parser versions and the registry's fingerprint


def parse_a(payload: ET.Element) -> dict[str, Any]:
    return {"tag": payload.tag}


def parse_b(payload: ET.Element) -> dict[str, Any]:
    return {"tag": payload.tag}


class ParserObject:
    def __call__(self, payload: ET.Element) -> dict[str, Any]:
        return {}


def test_a_parser_is_identified_by_its_qualified_name_and_declared_version() -> None:
    here = __name__
    plain = Analyser(name="a", node="n", parser=parse_a)
    assert plain.parser_identity == f"{here}.parse_a"
    assert Analyser(name="a", node="n").parser_identity == ""
    versioned = Analyser(name="a", node="n", parser=parse_a, parser_version="2")
    assert versioned.parser_identity == f"{here}.parse_a:2"
    wrapped = Analyser(name="a", node="n", parser=functools.partial(parse_a))
    assert wrapped.parser_identity == f"{here}.parse_a"
    instance = Analyser(name="a", node="n", parser=ParserObject())
    assert instance.parser_identity == f"{here}.ParserObject"
    with pytest.raises(InvalidArgument, match="parser_version must be a string"):
        Analyser(name="a", node="n", parser=parse_a, parser_version=2)  # type: ignore[arg-type]


def registry_with(*analysers: Analyser, rules: list[dict[str, Any]] | None = None) -> str:
    registry = AnalyserRegistry()
    for analyser in analysers:
        registry.register_analyser(analyser)
    registry.load_config_rules(rules or [])
    return registry.fingerprint()


def test_the_fingerprint_changes_with_what_decides_an_analysis() -> None:
    a = Analyser(name="a", namespace="urn:a", type="t", to_sync=True, parser=parse_a)
    b = Analyser(name="b", node="b", type="t")
    rule = {"name": "r", "node": "r", "type": "t"}
    base = registry_with(a, b, rules=[rule])
    # The same analysers in another registry, another run: the same fingerprint.
    assert registry_with(a, b, rules=[rule]) == base
    assert AnalyserRegistry().fingerprint() == AnalyserRegistry().fingerprint()
    changed = [
        registry_with(a, rules=[rule]),  # a plugin removed
        registry_with(b, a, rules=[rule]),  # another order
        registry_with(a, b, rules=[{**rule, "type": "u"}]),  # a rule edited
        registry_with(a, b),  # a rule removed
        registry_with(replace(a, parser=parse_b), b, rules=[rule]),
        registry_with(replace(a, parser_version="2"), b, rules=[rule]),
        registry_with(replace(a, to_sync=False), b, rules=[rule]),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    registry = AnalyserRegistry()
    before = registry.fingerprint()
    registry.register_analyser(b)
    assert registry.fingerprint() != before
    registry.unregister("b")
    assert registry.fingerprint() == before


@pytest.mark.parametrize(
    ("context", "needed"),
    [
        # Settled by the payloads: the namespace is there.
        (ctx("calendar", "urn:example:event"), False),
        # Not there: pubsub#type could still say it.
        (ctx("calendar", "urn:other"), True),
        (ctx("calendar"), True),
        # Known already.
        (ctx("calendar", node_type=""), False),
        # Matched before the namespace-only analyser is reached.
        (ctx("first", "urn:other"), False),
    ],
)
def test_the_node_type_is_asked_only_when_it_could_change_the_match(
    context: AnalysisContext, needed: bool
) -> None:
    registry = AnalyserRegistry()
    registry.register_analyser(Analyser(name="first", node="first"))
    registry.register_analyser(Analyser(name="events", namespace="urn:example:event"))
    assert registry.needs_node_type(context) is needed


def test_only_analysers_naming_the_node_make_its_type_worth_asking() -> None:
    registry = AnalyserRegistry()
    # The built-ins name their nodes: a node of another name never needs its type.
    assert not registry.needs_node_type(ctx("urn:xmpp:avatar:data"))
    # A microblog node whose payloads are not Atom: the type could make the guard fail.
    assert registry.needs_node_type(ctx(BLOG))
    assert not registry.needs_node_type(ctx(BLOG, ATOM_NS))


def test_a_namespace_matches_by_pubsub_type() -> None:
    registry = AnalyserRegistry()
    registry.register_analyser(Analyser(name="events", namespace="urn:example:event", type="e"))
    assert registry.match(ctx("calendar", "urn:other")) is None
    found = registry.match(ctx("calendar", "urn:other", node_type="urn:example:event"))
    assert found is not None and found.name == "events"


def test_payloads_are_worth_fetching_only_when_an_analyser_could_tell_by_them() -> None:
    registry = AnalyserRegistry()
    # The built-ins name their nodes, and check the namespace there only.
    assert registry.needs_payloads(ctx(BLOG))
    assert registry.needs_payloads(ctx("urn:xmpp:microblog:0:comments/x"))
    assert not registry.needs_payloads(ctx("urn:example:paged"))
    registry.register_analyser(
        Analyser(name="anything", match=lambda c: bool(c.payload_namespaces))
    )
    assert registry.needs_payloads(ctx("urn:example:paged"))
