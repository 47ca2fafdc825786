"""Analysers: which pubsub nodes the cache keeps, what they are, and how to parse their items.

An :class:`Analyser` recognises a node (by name or name prefix, by payload namespace or
``pubsub#type``, by a callable) and says what it is (``type``, ``subtype``), whether to
synchronise it (``to_sync``) and how to turn an item's payload into JSON (``parser``). The
:class:`AnalyserRegistry` holds them in order and answers "which analyser, if any, for this
node?" — the first one that matches.

Order. Analysers come from three sources, checked in this order:

1. **config** — ``[[cache.rules]]`` tables of the configuration file. They come first
   because they are what the user asked for on this machine, and must be able to
   override (or switch off, with ``to_sync = false``) what code ships.
2. **plugin** — analysers registered from code: the ``roost.analysers`` entry-point group
   and direct :meth:`AnalyserRegistry.register_analyser` calls. They come before the
   built-ins so that a plugin can specialise a node the built-ins also claim.
3. **builtin** — those Roost ships (XEP-0277 microblog and its comment nodes).

Within a source, registration order, unless ``position`` says otherwise.

Change. A node keeps its analysis, made when it was first met, together with the
registry's :meth:`~AnalyserRegistry.fingerprint` at that time. The fingerprint covers
every analyser in order (its source, criteria, outcome and parser version): installing or
removing a plugin, editing a config rule, or a parser whose version changed gives another
one, and the cache then analyses its known nodes again (see
:mod:`roost.service.cache.reanalysis`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from roost.service.cache.microblog import ATOM_NS, parse_microblog_entry
from roost.service.cache.parsers import Parser as Parser  # re-exported: it was defined here
from roost.service.cache.parsers import ParserCall
from roost.service.errors import Conflict, InvalidArgument, NotFound

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "roost.analysers"
MICROBLOG_NODE = "urn:xmpp:microblog:0"
MICROBLOG_COMMENTS_PREFIX = "urn:xmpp:microblog:0:comments/"

AnalyserSource = Literal["config", "plugin", "builtin"]
_SOURCE_RANK: dict[AnalyserSource, int] = {"config": 0, "plugin": 1, "builtin": 2}


@dataclass(frozen=True)
class AnalysisContext:
    """What is known about a node when it is analysed.

    Attributes:
        profile: the profile asking.
        service: the pubsub service's JID (the owner's bare JID for PEP).
        node: the node name.
        node_type: the node's ``pubsub#type`` from its disco#info meta-data form; None
            when it was not asked (only asked when it could change the match, see
            :meth:`AnalyserRegistry.needs_node_type`), empty when the server gave none.
        payload_namespaces: the namespaces of the payloads of the first items fetched
            (empty when the node is empty or was not fetched yet).
        is_pep: whether the service is a PEP service (a bare account JID).
    """

    profile: str
    service: str
    node: str
    node_type: str | None = None
    payload_namespaces: frozenset[str] = frozenset()
    is_pep: bool = False


@dataclass(frozen=True, kw_only=True)
class Analyser:
    """One rule of the cache: which nodes it recognises and what to do with them.

    Matching: every criterion given must hold, and at least one of ``node``,
    ``node_prefix``, ``namespace`` and ``match`` must be given.

    - ``node``: the node's name, exactly; ``node_prefix``: the start of its name (at most
      one of the two).
    - ``namespace``: a payload namespace seen in the node's first items, or the node's
      ``pubsub#type``. With a ``node`` or ``node_prefix`` beside it, it is a guard: it
      fails only when the node's namespaces are known and none is this one (an empty node
      named as expected still matches). Alone, it must be seen.
    - ``match``: a callable given the :class:`AnalysisContext`, returning whether it
      matches; one that raises counts as no match (and is logged).

    Outcome: ``type`` and ``subtype`` (free strings, stored with the node and offered to
    Search's ``types``/``subtypes``), ``to_sync`` (keep a synchronised copy and answer from
    it), ``parser`` (payload element, and the node's
    :class:`~roost.service.cache.parsers.ParserContext` when it asks for it → JSON-able
    dict, stored as the item's parsed data; plain or ``async def``, see
    :mod:`roost.service.cache.parsers`, whose rules are checked when the analyser is built),
    ``indexed_keys`` (parsed keys worth a database index, e.g. ``("published_ts",)``),
    ``refresh_interval`` (seconds: refresh a node periodically when it cannot be kept
    current by events; ``None`` means such a node is not cached), ``prefetch`` (a
    contact's node of this kind, learnt from the notifications the server sends at login,
    is synchronised before anyone reads it; only with ``to_sync``).

    ``parser_version``: a string naming the parser's output format. Stored parsed data is
    recomputed (from the stored XML, without asking the server) when the parser's
    :attr:`parser_identity` changes: that is the parser's qualified name (module and
    name, so another function counts as a change) followed by ``parser_version``. Change
    ``parser_version`` whenever the same function starts returning something else.

    .. versionchanged:: ``parser_version`` added; a node's stored parsed data follows
       its analyser's parser instead of being kept forever.
    """

    name: str
    type: str = ""
    subtype: str | None = None
    node: str | None = None
    node_prefix: str | None = None
    namespace: str | None = None
    match: Callable[[AnalysisContext], bool] | None = None
    to_sync: bool = False
    parser: Parser | None = None
    parser_version: str | None = None
    indexed_keys: tuple[str, ...] = ()
    refresh_interval: float | None = None
    prefetch: bool = False

    def __post_init__(self) -> None:
        problem = _analyser_problem(self)
        if problem:
            raise InvalidArgument(f"analyser {self.name!r}: {problem}")

    @property
    def parser_identity(self) -> str:
        """What the node's parsed data depends on: empty without a parser, else the
        parser's qualified name, and ``:`` and ``parser_version`` when one is given."""
        if self.parser is None:
            return ""
        name = callable_name(self.parser)
        return name if self.parser_version is None else f"{name}:{self.parser_version}"

    def fingerprint_parts(self) -> dict[str, Any]:
        """Everything of this analyser that decides a node's analysis and parsed data,
        as JSON-able values (callables by their qualified names)."""
        return {
            "name": self.name,
            "node": self.node,
            "node_prefix": self.node_prefix,
            "namespace": self.namespace,
            "match": None if self.match is None else callable_name(self.match),
            "type": self.type,
            "subtype": self.subtype,
            "to_sync": self.to_sync,
            "parser": self.parser_identity,
            "indexed_keys": list(self.indexed_keys),
            "refresh_interval": self.refresh_interval,
            "prefetch": self.prefetch,
        }

    def names_node(self, context: AnalysisContext) -> bool:
        """Whether the node's name passes ``node`` and ``node_prefix`` (true when neither
        is given)."""
        if self.node is not None and context.node != self.node:
            return False
        return self.node_prefix is None or context.node.startswith(self.node_prefix)

    def matches(self, context: AnalysisContext) -> bool:
        """Whether this analyser recognises the node described by ``context``."""
        if not self.names_node(context):
            return False
        if self.namespace is not None:
            seen = set(context.payload_namespaces)
            if context.node_type:
                seen.add(context.node_type)
            named = self.node is not None or self.node_prefix is not None
            if (seen or not named) and self.namespace not in seen:
                return False
        if self.match is not None:
            try:
                return bool(self.match(context))
            except Exception:
                log.exception(
                    "analyser %r: match() failed on %s node %r; treated as no match",
                    self.name,
                    context.service,
                    context.node,
                )
                return False
        return True


def _analyser_problem(analyser: Analyser) -> str | None:
    if not isinstance(analyser.name, str) or not analyser.name.strip():
        return "the name must be a non-empty string"
    if analyser.node is not None and analyser.node_prefix is not None:
        return "give node or node_prefix, not both"
    if (
        analyser.node is None
        and analyser.node_prefix is None
        and analyser.namespace is None
        and analyser.match is None
    ):
        return "it matches nothing: give node, node_prefix, namespace or match"
    if analyser.node_prefix == "":
        return "node_prefix must not be empty"
    if analyser.parser is not None:
        try:
            ParserCall.of(analyser.parser)
        except InvalidArgument as exc:
            return exc.message
    version: object = analyser.parser_version  # a plugin may pass anything
    if version is not None and not isinstance(version, str):
        return f"parser_version must be a string, not {version!r}"
    interval = analyser.refresh_interval
    if interval is not None and (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        return f"refresh_interval must be a positive number of seconds, not {interval!r}"
    return None


@dataclass(frozen=True)
class _Entry:
    analyser: Analyser
    source: AnalyserSource


class AnalyserRegistry:
    """The ordered analysers of one daemon; the first that matches a node wins.

    See the module docstring for the order of the three sources.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._entries: list[_Entry] = []
        self._fingerprint: str | None = None
        if builtins:
            for analyser in builtin_analysers():
                self.register_analyser(analyser, source="builtin")

    def register_analyser(
        self,
        analyser: Analyser,
        *,
        position: int | None = None,
        source: AnalyserSource = "plugin",
    ) -> None:
        """Add an analyser, deciding which pubsub nodes the cache keeps and how.

        Analysers are consulted in order when a node is first seen (or re-analysed) and
        the first whose criteria all hold decides the node's ``type``, ``subtype``,
        whether it is synchronised (``to_sync``) and how its items are parsed
        (``parser``); the node keeps that analysis while the registry's
        :meth:`fingerprint` stays the same (a daemon started with other analysers
        analyses its known nodes again). The order is by source, then by
        registration: configuration rules first (the user's intent on this machine),
        then analysers from code (this method, and the ``roost.analysers`` entry
        points), then the built-ins (XEP-0277 microblog and comments), so code can
        specialise what Roost ships and the configuration can override both.

        Args:
            analyser: the :class:`Analyser`; its ``name`` must be unique in the registry.
            position: where to insert it among the analysers of the same source
                (0 = before all of them, as in :meth:`list.insert`); ``None`` appends.
            source: ``"plugin"`` for code (the default), ``"config"`` and ``"builtin"``
                for the registry's own loaders.

        Raises:
            Conflict: an analyser of that name is registered already.
            InvalidArgument: ``analyser`` is not an :class:`Analyser` or ``source`` is
                unknown.
        """
        if not isinstance(analyser, Analyser):
            raise InvalidArgument(f"expected an Analyser, got {type(analyser).__name__}")
        if source not in _SOURCE_RANK:
            raise InvalidArgument(f"unknown analyser source {source!r}")
        if any(e.analyser.name == analyser.name for e in self._entries):
            raise Conflict(f"an analyser named {analyser.name!r} is registered already")
        rank = _SOURCE_RANK[source]
        start = sum(1 for e in self._entries if _SOURCE_RANK[e.source] < rank)
        same = sum(1 for e in self._entries if e.source == source)
        if position is None:
            offset = same
        elif position < 0:
            offset = max(0, same + position)
        else:
            offset = min(position, same)
        self._entries.insert(start + offset, _Entry(analyser, source))
        self._fingerprint = None

    def unregister(self, name: str) -> Analyser:
        """Remove the analyser named ``name`` and return it.

        Raises:
            NotFound: no analyser has that name.
        """
        for index, entry in enumerate(self._entries):
            if entry.analyser.name == name:
                del self._entries[index]
                self._fingerprint = None
                return entry.analyser
        raise NotFound(f"no analyser named {name!r}")

    def get(self, name: str) -> Analyser | None:
        """The analyser named ``name``, or ``None``."""
        return next((e.analyser for e in self._entries if e.analyser.name == name), None)

    def analysers(self) -> list[Analyser]:
        """Every analyser, in the order they are consulted."""
        return [e.analyser for e in self._entries]

    def source_of(self, name: str) -> AnalyserSource:
        """Where the analyser named ``name`` came from.

        Raises:
            NotFound: no analyser has that name.
        """
        for entry in self._entries:
            if entry.analyser.name == name:
                return entry.source
        raise NotFound(f"no analyser named {name!r}")

    def match(self, context: AnalysisContext) -> Analyser | None:
        """The first analyser recognising the node of ``context``, or ``None``."""
        for entry in self._entries:
            if entry.analyser.matches(context):
                return entry.analyser
        return None

    def needs_payloads(self, context: AnalysisContext) -> bool:
        """Whether the node's payload namespaces could change which analyser matches it:
        an analyser that accepts the node's name has a ``namespace`` or a ``match``.
        When none has, the node's items need not be fetched to analyse it."""
        return any(
            (e.analyser.namespace is not None or e.analyser.match is not None)
            and e.analyser.names_node(context)
            for e in self._entries
        )

    def needs_node_type(self, context: AnalysisContext) -> bool:
        """Whether the node's ``pubsub#type`` could change which analyser matches it.

        Only when an analyser consulted before the match (or the match itself) names a
        ``namespace`` that the payload namespaces do not settle: absent from them, on a
        node whose name it accepts. Asking for the type costs a disco#info query, so a
        node whose payloads settle every such question is analysed without it.
        """
        if context.node_type is not None:
            return False
        for entry in self._entries:
            analyser = entry.analyser
            if (
                analyser.namespace is not None
                and analyser.namespace not in context.payload_namespaces
                and analyser.names_node(context)
            ):
                return True
            if analyser.matches(context):
                return False
        return False

    def fingerprint(self) -> str:
        """A short digest of every analyser in order: source, criteria, outcome and
        :attr:`Analyser.parser_identity`.

        Two daemons with the same built-ins, plugins and config rules (and the same
        parser versions) have the same fingerprint, whatever the run; a plugin installed
        or removed, or a rule edited, changes it. A node stores the fingerprint it was
        analysed with (``analysed_with``), and is analysed again when it differs.
        """
        if self._fingerprint is None:
            described = [
                {"source": e.source, **e.analyser.fingerprint_parts()} for e in self._entries
            ]
            text = json.dumps(described, sort_keys=True, separators=(",", ":"))
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._fingerprint

    def load_entry_points(self) -> list[Analyser]:
        """Register the analysers of the installed ``roost.analysers`` entry points.

        An entry point names one of (told apart by type, then by signature):

        - an :class:`Analyser`;
        - a *factory*, a callable taking no argument that returns an analyser or a
          sequence of them;
        - a *setup function*, a callable taking one positional argument: it is given
          this registry and registers its analysers itself with
          :meth:`register_analyser` (so it may choose ``position``), returning None.

        Entry points are loaded in the order of their names. A plugin that fails to
        import, raises, returns something else, or reuses a taken name is logged and
        skipped, with nothing it registered left behind: a broken plugin never stops
        the daemon.

        Returns:
            The analysers registered, in order.

        .. versionchanged:: an entry point may be a setup function given the registry.
        """
        added: list[Analyser] = []
        for entry_point in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name
        ):
            before = list(self._entries)
            try:
                added.extend(self._load_plugin(entry_point.load()))
            except Exception as exc:
                # Nothing of a plugin that failed half-way stays registered.
                self._entries = before
                self._fingerprint = None
                log.error(
                    "analyser plugin %r (%s) skipped: %s",
                    entry_point.name,
                    entry_point.value,
                    exc,
                    exc_info=not isinstance(exc, Conflict | InvalidArgument),
                )
        return added

    def _load_plugin(self, loaded: object) -> list[Analyser]:
        """Register what one entry point gave; returns the analysers it added."""
        if _is_setup_function(loaded):
            assert callable(loaded)
            before = {id(e) for e in self._entries}
            returned = loaded(self)
            if returned is not None:
                raise InvalidArgument(
                    "a setup function registers its analysers with "
                    f"registry.register_analyser() and returns None, not "
                    f"{type(returned).__name__}"
                )
            return [e.analyser for e in self._entries if id(e) not in before]
        analysers = _analysers_from(loaded)
        for analyser in analysers:
            self.register_analyser(analyser, source="plugin")
        return analysers

    def load_config_rules(self, rules: Iterable[Mapping[str, Any]]) -> list[Analyser]:
        """Replace the configuration's analysers with ``rules`` (``[[cache.rules]]`` tables).

        A rule holds ``name`` (required), ``node`` or ``node_prefix``, ``namespace``,
        ``type``, ``subtype``, ``to_sync`` (default false), ``refresh_interval``
        (seconds) and ``prefetch`` (default false). Every rule is checked before any is
        registered, so a bad file changes nothing.

        Raises:
            InvalidArgument: a rule is malformed; the message gives its index (from 0),
                its name when it has one, and what is wrong.
        """
        parsed = [_rule_to_analyser(index, rule) for index, rule in enumerate(rules)]
        names: dict[str, int] = {}
        for index, analyser in enumerate(parsed):
            if analyser.name in names:
                raise InvalidArgument(
                    f"cache rule {index}: the name {analyser.name!r} is used by rule "
                    f"{names[analyser.name]} too"
                )
            names[analyser.name] = index
            taken = next((e for e in self._entries if e.analyser.name == analyser.name), None)
            if taken is not None and taken.source != "config":
                raise InvalidArgument(
                    f"cache rule {index}: the name {analyser.name!r} is taken by a "
                    f"{taken.source} analyser"
                )
        self._entries = [e for e in self._entries if e.source != "config"]
        self._fingerprint = None
        for analyser in parsed:
            self.register_analyser(analyser, source="config")
        return parsed

    def describe(self) -> list[dict[str, Any]]:
        """Every analyser as a record for ``ListAnalysers``, in the order they are consulted.

        Keys: ``name``, ``node``, ``node_prefix``, ``namespace``, ``type``, ``subtype``
        (strings, empty when unset), ``to_sync``, ``has_parser``, ``has_match`` (bools),
        ``indexed_keys`` (strings), ``refresh_interval`` (seconds, 0 when unset),
        ``prefetch`` (bool), ``parser_version`` (:attr:`Analyser.parser_identity`, empty
        without a parser) and ``source`` (``builtin``, ``plugin`` or ``config``).
        """
        return [
            {
                "name": e.analyser.name,
                "node": e.analyser.node or "",
                "node_prefix": e.analyser.node_prefix or "",
                "namespace": e.analyser.namespace or "",
                "type": e.analyser.type,
                "subtype": e.analyser.subtype or "",
                "to_sync": e.analyser.to_sync,
                "has_parser": e.analyser.parser is not None,
                "has_match": e.analyser.match is not None,
                "indexed_keys": list(e.analyser.indexed_keys),
                "refresh_interval": float(e.analyser.refresh_interval or 0.0),
                "prefetch": e.analyser.prefetch,
                "parser_version": e.analyser.parser_identity,
                "source": e.source,
            }
            for e in self._entries
        ]


# The built-in microblog parser's output format: bump it when parse_microblog_entry starts
# returning something else, and every stored blog post is parsed again.
MICROBLOG_PARSER_VERSION = "1"


def builtin_analysers() -> list[Analyser]:
    """The analysers Roost ships: XEP-0277 microblog posts and their comment nodes."""
    indexed = ("published_ts", "updated_ts", "author_jid", "title")
    return [
        Analyser(
            name="microblog",
            node=MICROBLOG_NODE,
            namespace=ATOM_NS,
            type="blog",
            to_sync=True,
            parser=parse_microblog_entry,
            parser_version=MICROBLOG_PARSER_VERSION,
            indexed_keys=indexed,
            prefetch=True,
        ),
        Analyser(
            name="microblog_comments",
            node_prefix=MICROBLOG_COMMENTS_PREFIX,
            namespace=ATOM_NS,
            type="blog",
            subtype="comment",
            to_sync=True,
            parser=parse_microblog_entry,
            parser_version=MICROBLOG_PARSER_VERSION,
            indexed_keys=indexed,
        ),
    ]


def callable_name(function: object) -> str:
    """A callable's qualified name (``module.Class.function``), stable across runs.

    A :func:`functools.partial` is named after the function it wraps, a bound method
    after its function, a callable object after its class.
    """
    while isinstance(function, functools.partial):
        function = function.func
    function = getattr(function, "__func__", function)
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(qualname, str):
        kind = type(function)
        module, qualname = kind.__module__, kind.__qualname__
    return f"{module}.{qualname}" if module else qualname


def _is_setup_function(loaded: object) -> bool:
    """Whether an entry point's object is a setup function: a callable (not a class)
    requiring exactly one positional argument, the registry."""
    if isinstance(loaded, Analyser | type) or not callable(loaded):
        return False
    try:
        parameters = inspect.signature(loaded).parameters.values()
    except (TypeError, ValueError):
        return False  # no signature to read: called as a factory, as before
    required = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.default is inspect.Parameter.empty
    ]
    return len(required) == 1


def _analysers_from(loaded: object) -> list[Analyser]:
    """What an entry point gave, as analysers: the object itself, or what calling it returns."""
    produced = loaded
    if not isinstance(loaded, Analyser) and callable(loaded):
        produced = loaded()
    if isinstance(produced, Analyser):
        return [produced]
    if isinstance(produced, Sequence) and not isinstance(produced, str | bytes):
        items = list(produced)
        if items and all(isinstance(item, Analyser) for item in items):
            return items
    raise InvalidArgument(
        f"expected an Analyser, a callable returning one or a list of them, or a setup "
        f"function taking the registry, got {type(produced).__name__}"
    )


_RULE_KEYS = {
    "name",
    "node",
    "node_prefix",
    "namespace",
    "type",
    "subtype",
    "to_sync",
    "refresh_interval",
    "prefetch",
}
_RULE_STRINGS = ("name", "node", "node_prefix", "namespace", "type", "subtype")


def _rule_to_analyser(index: int, rule: Mapping[str, Any]) -> Analyser:
    """One ``[[cache.rules]]`` table as an analyser, or InvalidArgument saying what is wrong."""
    if not isinstance(rule, Mapping):
        raise InvalidArgument(f"cache rule {index}: expected a table, got {type(rule).__name__}")
    label = f"cache rule {index}" + (
        f" ({rule['name']!r})" if isinstance(rule.get("name"), str) else ""
    )
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        raise InvalidArgument(
            f"{label}: unknown key(s) {', '.join(unknown)}; "
            f"a rule may hold {', '.join(sorted(_RULE_KEYS))}"
        )
    for key in _RULE_STRINGS:
        if key in rule and not isinstance(rule[key], str):
            raise InvalidArgument(f"{label}: {key} must be a string, not {rule[key]!r}")
    if "name" not in rule:
        raise InvalidArgument(f"{label}: name is required")
    if not any(key in rule for key in ("node", "node_prefix", "namespace")):
        raise InvalidArgument(f"{label}: give node, node_prefix or namespace to match on")
    to_sync = rule.get("to_sync", False)
    if not isinstance(to_sync, bool):
        raise InvalidArgument(f"{label}: to_sync must be true or false, not {to_sync!r}")
    prefetch = rule.get("prefetch", False)
    if not isinstance(prefetch, bool):
        raise InvalidArgument(f"{label}: prefetch must be true or false, not {prefetch!r}")
    try:
        return Analyser(
            name=rule["name"],
            node=rule.get("node"),
            node_prefix=rule.get("node_prefix"),
            namespace=rule.get("namespace"),
            type=rule.get("type", ""),
            subtype=rule.get("subtype"),
            to_sync=to_sync,
            refresh_interval=rule.get("refresh_interval"),
            prefetch=prefetch,
        )
    except InvalidArgument as exc:
        # Analyser's own check names the analyser; the user needs the rule's index.
        detail = exc.message.partition(": ")[2] or exc.message
        raise InvalidArgument(f"{label}: {detail}") from None
