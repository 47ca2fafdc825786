"""The bus fuzz: random calls of every method at a daemon with a connected profile, and how
their answers are judged.

Two kinds of call are drawn. *Mixed* calls take any argument of the right D-Bus type,
biased towards the names the world holds (the connected profile, its synchronised node,
real item ids and RSM tokens), so that many go past the argument checks and reach the
cache and the server. *Refused* calls are mixed calls spoilt in a way that must be
refused before anything is written (a profile that does not exist, an unknown option key,
a search limit over its bound, a profile name taken): around each, every table of the
database (the cache's and the full-text index's included) is compared.

What a call may answer: success, or an ``org.roost.Backend1.Error.*`` error other than
``Internal``; a call sent with a signature the method does not take may also answer
dbus-fast's ``UnknownMethod`` (or ``InvalidArgs``), the only ``org.freedesktop.DBus.Error``
the fuzz accepts.

Calls that would undo the world rather than test it are left out: deleting or
disconnecting the fuzz profile, ``Cache.Reset``, a ``Purge`` that could match the
synchronised node, and deleting, purging, retracting from or unsubscribing from the
world's real nodes (random node names still reach those members).

The pubsub services drawn are the test server's own or malformed; contacts' JIDs are the
test server's, or a domain under ``.invalid``: the test servers do not federate, so no
call reaches past loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dbus_fast import Variant
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from roost.bridge.client import RoostClient, RoostDBusError
from roost.bridge.constants import (
    CACHE_INTERFACE,
    CONTACTS_INTERFACE,
    ERROR_INTERNAL,
    ERROR_PREFIX,
    PROFILES_INTERFACE,
    PUBSUB_INTERFACE,
    STORAGE_INTERFACE,
)
from roost.service.pubsub.rsm import encode_token
from tests.bridge.strategies import dbus_text, variant_of, variants

DATA = Path(__file__).resolve().parents[2] / "data"
PROPERTIES = "org.freedesktop.DBus.Properties"
# What dbus-fast itself answers to a body that does not match the method's signature.
WRONG_SIGNATURE = {
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.InvalidArgs",
}


class Call(NamedTuple):
    """One method call: where it goes, its signature and body, and what is expected."""

    interface: str
    member: str
    signature: str
    body: list[Any]
    #: The call must be refused with a Roost error and change no table.
    refused: bool = False
    #: The body was sent with a signature the method does not take.
    wrong_signature: bool = False


@dataclass(frozen=True)
class FuzzWorld:
    """What the fuzz calls are aimed at."""

    profile: str
    jid: str
    idle_profile: str
    service: str
    domain: str
    synced_node: str
    plain_node: str
    item_ids: tuple[str, ...]
    database: Path
    pid: int

    @property
    def real_nodes(self) -> tuple[str, ...]:
        """The nodes another client made, which destructive calls never name."""
        return (self.synced_node, self.plain_node)


@dataclass
class FuzzStats:
    """What a fuzz run saw."""

    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    refused_compared: int = 0
    table_changes: list[str] = field(default_factory=list)
    members: set[str] = field(default_factory=set)


def interface_methods() -> dict[tuple[str, str], str]:
    """Every method of every ``org.roost.Backend1.*`` interface: (interface, member) to its
    input signature, read from the introspection XML in ``data/``."""
    methods: dict[tuple[str, str], str] = {}
    for path in sorted(DATA.glob("org.roost.Backend1.*.xml")):
        for iface in ET.parse(path).getroot().iter("interface"):
            for method in iface.iter("method"):
                signature = "".join(
                    arg.get("type", "")
                    for arg in method.iter("arg")
                    if arg.get("direction", "in") == "in"
                )
                methods[(iface.get("name", ""), method.get("name", ""))] = signature
    return methods


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def snapshot(database: Path) -> dict[str, str]:
    """Every table of the database, each as a digest of its rows, read-only."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        digests = {}
        for table in tables:
            rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
            digests[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return digests


# -- arguments --------------------------------------------------------------------------

# Long strings are built, not listed: a strategy's repr must stay short.
long_text = st.sampled_from(["x", "\U0001f600", "\u00e9", "%"]).flatmap(
    lambda unit: st.integers(200, 5000).map(lambda n: unit * n)
)
odd_text = st.sampled_from(
    [
        "",
        " ",
        "\u202e\u0301e\u0301",
        "\ufeff\ufffe\uffff",
        "a\u2028b\u2029c",
        "\u0000".replace("\u0000", "\x01\x02\x1f"),
        "%_\\%",
        "' OR 1=1 --",
        '"; DROP TABLE profiles; --',
        "<x/>",
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'x'>]><x>&e;</x>",
        "{}",
        "@global@",
        "@roost",
        "../../etc/passwd",
    ]
)
text = st.one_of(dbus_text, odd_text, long_text)
huge_numbers = st.sampled_from(
    [
        Variant("t", 2**64 - 1),
        Variant("x", -(2**63)),
        Variant("x", 2**63 - 1),
        Variant("u", 2**32 - 1),
        Variant("u", 0),
        Variant("i", -1),
        Variant("d", 1e308),
        Variant("d", -0.0),
        Variant("d", 5e-324),
        Variant("y", 255),
    ]
)
# Nested variants and containers beyond what the generic strategy reaches.
deep = st.integers(10, 28).map(
    lambda depth: _nest(Variant("s", "deep"), depth),
)
# NUL cannot travel in a D-Bus string (the client library refuses to send one): it goes
# in a byte array instead.
nul_bytes = st.binary(max_size=64).map(lambda data: Variant("ay", b"\x00" + data + b"\x00"))
any_variant = st.one_of(
    variants, huge_numbers, deep, nul_bytes, text.map(lambda t: Variant("s", t))
)


def _nest(inner: Variant, depth: int) -> Variant:
    for level in range(depth):
        inner = Variant("av", [inner]) if level % 2 else Variant("v", inner)
    return inner


KNOWN_KEYS = [
    "max_items",
    "item_ids",
    "before",
    "after",
    "use_cache",
    "profiles",
    "services",
    "nodes",
    "types",
    "subtypes",
    "fts",
    "parsed",
    "order_by",
    "limit",
    "offset",
    "older_than",
    "subid",
    "notify",
    "name",
    "groups",
    "subscribe",
    "host",
    "port",
    "tls",
    "autoconnect",
    "replace",
    "pubsub#max_items",
    "pubsub#access_model",
    "pubsub#title",
]


class Pools:
    """Strategies of arguments biased towards ``world``'s names."""

    def __init__(self, world: FuzzWorld) -> None:
        """Draw from ``world``'s profile, services, nodes, item ids and tokens."""
        self.world = world
        ids = list(world.item_ids)
        tokens = [encode_token(i) for i in ids] + ["r1.", "r1.e30", "r1.WyJub3BlIl0", "post-1"]
        # The world's names come three times as often as random text, so that most calls
        # get past the argument checks.
        self.profiles = st.one_of(
            st.just(world.profile),
            st.just(world.profile),
            st.sampled_from([world.profile, "", world.idle_profile, "@global@"]),
            text,
        )
        self.services = st.one_of(
            st.sampled_from(
                [
                    "",
                    world.service,
                    world.jid,
                    f"nobody@{world.domain}",
                    "a b@/",
                    "@",
                    "x@y/z",
                    "pubsub.example.invalid",
                ]
            ),
            text.filter(lambda t: "." not in t),
        )
        self.nodes = st.one_of(
            st.sampled_from(
                [*world.real_nodes, "urn:xmpp:microblog:0", "urn:xmpp:microblog:0:comments/x"]
            ),
            text,
        )
        self.loose_nodes = text.filter(lambda n: n not in world.real_nodes)
        self.item_ids = st.one_of(st.sampled_from(ids), st.sampled_from(ids), text)
        self.tokens = st.one_of(st.sampled_from(tokens), st.sampled_from(tokens), text)
        self.jids = st.one_of(
            st.sampled_from(
                [
                    world.jid,
                    f"friend@{world.domain}",
                    f"{world.domain}",
                    "someone@example.invalid",
                    "a@b@c",
                    "x@y/z",
                ]
            ),
            text.filter(lambda t: "." not in t),
        )
        self.value = st.one_of(
            st.sampled_from(
                [
                    Variant("u", 5),
                    Variant("u", 10_000),
                    Variant("s", ""),
                    Variant("b", False),
                    Variant("d", 1.5),
                ]
            ),
            self.item_ids.map(lambda i: Variant("as", [i])),
            self.tokens.map(lambda t: Variant("s", t)),
            self.profiles.map(lambda p: Variant("as", [p])),
            self.nodes.map(lambda n: Variant("as", [n])),
            st.builds(
                lambda path, op, value: Variant(
                    "aa{sv}", [{"path": Variant("s", path), "op": Variant("s", op), "value": value}]
                ),
                st.sampled_from(["title", "tags", "published_ts", "a.0.b", "", "x" * 300]),
                st.sampled_from(["eq", "lt", "in", "between", "like", "contains", "regex"]),
                any_variant,
            ),
            any_variant,
        )
        self.random_options = st.dictionaries(
            st.one_of(st.sampled_from(KNOWN_KEYS), text), self.value, max_size=5
        )
        small = st.integers(0, 2**32 - 1)
        names = st.lists(
            st.one_of(
                st.sampled_from([world.profile, w_node := world.synced_node, world.service]), text
            ),
            max_size=3,
        )
        good: dict[str, st.SearchStrategy[Variant]] = {
            "max_items": st.one_of(st.integers(1, 10_000), small).map(lambda n: Variant("u", n)),
            "item_ids": st.lists(self.item_ids, max_size=5).map(lambda ids: Variant("as", ids)),
            "after": st.one_of(st.just(""), self.tokens).map(lambda t: Variant("s", t)),
            "before": st.one_of(st.just(""), self.tokens).map(lambda t: Variant("s", t)),
            "use_cache": st.booleans().map(lambda b: Variant("b", b)),
            "profiles": names.map(lambda v: Variant("as", v)),
            "nodes": st.lists(st.sampled_from([w_node, world.plain_node]), max_size=2).map(
                lambda v: Variant("as", v)
            ),
            "types": st.lists(st.sampled_from(["blog", "comment", ""]), max_size=2).map(
                lambda v: Variant("as", v)
            ),
            "fts": st.one_of(
                st.sampled_from(["comment", '"body of"', "\u00e9t\u00e9", "*"]), text
            ).map(lambda t: Variant("s", t)),
            "limit": st.one_of(st.integers(0, 1000), small).map(lambda n: Variant("u", n)),
            "offset": small.map(lambda n: Variant("u", n)),
            "older_than": st.floats(allow_nan=False).map(lambda d: Variant("d", d)),
            "subid": text.map(lambda t: Variant("s", t)),
            "notify": st.booleans().map(lambda b: Variant("b", b)),
            "name": text.map(lambda t: Variant("s", t)),
            "groups": st.lists(text, max_size=3).map(lambda v: Variant("as", v)),
            "subscribe": st.booleans().map(lambda b: Variant("b", b)),
            "replace": st.booleans().map(lambda b: Variant("b", b)),
            "pubsub#title": text.map(lambda t: Variant("s", t)),
            "pubsub#max_items": st.sampled_from(["1", "max", "-1", "x"]).map(
                lambda t: Variant("s", t)
            ),
        }
        self.options = st.one_of(
            st.fixed_dictionaries({}, optional=good),
            st.fixed_dictionaries({}, optional=good),
            self.random_options,
        )

    def strict_options(self, refuse: bool) -> st.SearchStrategy[dict[str, Variant]]:
        """Options for a member that refuses unknown keys; with an unknown key added when
        the call must be refused."""
        if not refuse:
            return self.options
        return self.options.map(
            lambda opts: {**opts, f"zz-{uuid.uuid4().hex[:6]}": Variant("b", True)}
        )


def _calls(pools: Pools, refuse: bool) -> list[tuple[str, str, str, st.SearchStrategy[Any]]]:
    """Every method with a strategy of bodies: when ``refuse``, bodies that must be
    refused; else any body the fuzz may send."""
    w = pools.world
    missing = st.uuids().map(lambda u: f"nx-{u.hex[:12]}")
    if refuse:
        profile: st.SearchStrategy[str] = st.one_of(missing, st.sampled_from(["a b", "x" * 65]))
        loose_profile = profile
    else:
        profile = pools.profiles
        # Never the fuzz profile: deleting or disconnecting it would end the world.
        loose_profile = pools.profiles.filter(lambda p: p not in (w.profile, ""))
    strict = pools.strict_options(refuse)
    target = st.tuples(profile, pools.services, pools.nodes)
    loose_target = st.tuples(profile, pools.services, pools.loose_nodes)
    create_options = st.dictionaries(
        st.sampled_from(["tls", "autoconnect", "name"]), pools.value, max_size=2
    ).map(
        # Any profile the fuzz creates points at a closed loopback port.
        lambda extra: {**extra, "host": Variant("s", "127.0.0.1"), "port": Variant("u", 1)}
    )
    create_name = st.just(w.profile) if refuse else st.one_of(missing, text)
    purge = pools.options.map(
        # Only profiles that do not exist: a purge never reaches the world's nodes.
        lambda opts: {**opts, "profiles": Variant("as", ["nx-none"])}
    )
    if refuse:
        purge = strict
    search = strict if refuse else pools.options
    bad_urls = st.sampled_from(
        [
            "",
            "sqlite://",
            "sqlite:///relative.sqlite",
            "sqlite:///:memory:",
            "mysql://u@127.0.0.1:1/db",
            "postgresql://u:secret@127.0.0.1:1/db",
            "postgresql://u@127.0.0.1:notaport/db",
            f"sqlite:///{w.database}",
        ]
    )
    return [
        (
            PROFILES_INTERFACE,
            "Create",
            "sssa{sv}",
            st.tuples(create_name, pools.jids, text, create_options),
        ),
        (PROFILES_INTERFACE, "Delete", "s", st.tuples(loose_profile)),
        (PROFILES_INTERFACE, "List", "", st.tuples()),
        (PROFILES_INTERFACE, "Connect", "s", st.tuples(profile)),
        (PROFILES_INTERFACE, "Disconnect", "s", st.tuples(loose_profile)),
        (PROFILES_INTERFACE, "IsConnected", "s", st.tuples(profile)),
        (
            PROPERTIES,
            "Set",
            "ssv",
            st.tuples(
                st.just(PROFILES_INTERFACE),
                st.just("Default"),
                (missing if refuse else pools.profiles).map(lambda n: Variant("s", n)),
            ),
        ),
        (STORAGE_INTERFACE, "GetParam", "sss", st.tuples(profile, text, text)),
        (STORAGE_INTERFACE, "SetParam", "ssss", st.tuples(profile, text, text, text)),
        (STORAGE_INTERFACE, "ListParams", "ss", st.tuples(profile, text)),
        (
            STORAGE_INTERFACE,
            "GetValues",
            "ssas",
            st.tuples(profile, text, st.lists(text, max_size=4)),
        ),
        (STORAGE_INTERFACE, "SetValue", "sssv", st.tuples(profile, text, text, any_variant)),
        (STORAGE_INTERFACE, "DeleteValue", "sss", st.tuples(profile, text, text)),
        (STORAGE_INTERFACE, "CopyDatabase", "sa{sv}", st.tuples(bad_urls, strict)),
        (
            PUBSUB_INTERFACE,
            "GetItems",
            "sssa{sv}",
            st.tuples(profile, pools.services, pools.nodes, strict),
        ),
        (
            PUBSUB_INTERFACE,
            "Publish",
            "sssssa{sv}",
            st.tuples(profile, pools.services, pools.nodes, pools.item_ids, text, pools.options),
        ),
        (
            PUBSUB_INTERFACE,
            "Retract",
            "sssasa{sv}",
            st.tuples(
                profile,
                pools.services,
                pools.loose_nodes,
                st.lists(pools.item_ids, max_size=3),
                strict,
            ),
        ),
        (
            PUBSUB_INTERFACE,
            "CreateNode",
            "sssa{sv}",
            st.tuples(profile, pools.services, pools.nodes, pools.options),
        ),
        (PUBSUB_INTERFACE, "DeleteNode", "sss", loose_target),
        (PUBSUB_INTERFACE, "PurgeNode", "sss", loose_target),
        (PUBSUB_INTERFACE, "GetNodeConfig", "sss", target),
        (
            PUBSUB_INTERFACE,
            "SetNodeConfig",
            "sssa{sv}",
            st.tuples(profile, pools.services, pools.loose_nodes, pools.options),
        ),
        (
            PUBSUB_INTERFACE,
            "Subscribe",
            "sssa{sv}",
            st.tuples(profile, pools.services, pools.nodes, pools.options),
        ),
        (
            PUBSUB_INTERFACE,
            "Unsubscribe",
            "sssa{sv}",
            st.tuples(profile, pools.services, pools.loose_nodes, strict),
        ),
        (PUBSUB_INTERFACE, "GetSubscriptions", "sss", target),
        (CACHE_INTERFACE, "Search", "a{sv}", st.tuples(search)),
        (CACHE_INTERFACE, "GetNodeState", "sss", target),
        (CACHE_INTERFACE, "Sync", "sss", target),
        (CACHE_INTERFACE, "Purge", "a{sv}", st.tuples(purge)),
        (CACHE_INTERFACE, "ListAnalysers", "", st.tuples()),
        (CONTACTS_INTERFACE, "List", "s", st.tuples(profile)),
        (CONTACTS_INTERFACE, "ListRequests", "s", st.tuples(profile)),
        (CONTACTS_INTERFACE, "Add", "ssa{sv}", st.tuples(profile, pools.jids, strict)),
        (CONTACTS_INTERFACE, "Remove", "ss", st.tuples(profile, pools.jids)),
        (CONTACTS_INTERFACE, "Authorize", "ssb", st.tuples(profile, pools.jids, st.booleans())),
    ]


# Members with no argument to spoil: never in the refused set (List and ListAnalysers only
# read; Reset is left out of the fuzz altogether).
_NO_ARGUMENTS = {"List", "ListAnalysers"}
# Refused calls whose refusal hinges on a spoilt option, not a missing profile: Create of
# a taken name is Conflict whatever else it holds.
COVERED_ELSEWHERE = {(CACHE_INTERFACE, "Reset")}


def covered_members(world: FuzzWorld) -> set[tuple[str, str, str]]:
    """(interface, member, signature) of every method the fuzz calls."""
    return {(i, m, s) for i, m, s, _ in _calls(Pools(world), refuse=False)}


def mixed_calls(world: FuzzWorld) -> st.SearchStrategy[Call]:
    """Any call the fuzz may send; now and then a body sent with another signature."""
    entries = _calls(Pools(world), refuse=False)
    right = st.sampled_from(entries).flatmap(
        lambda e: e[3].map(lambda body: Call(e[0], e[1], e[2], list(body)))
    )
    wrong = st.tuples(st.sampled_from(entries), variant_of("(sss)")).map(
        lambda pair: Call(
            pair[0][0],
            pair[0][1],
            "(sss)" if pair[0][2] != "(sss)" else "s",
            [pair[1].value],
            wrong_signature=True,
        )
    )
    return st.one_of(right, right, right, right, right, right, right, right, right, wrong)


def refused_calls(world: FuzzWorld) -> st.SearchStrategy[Call]:
    """Calls that must be refused, each before it writes anything."""
    entries = [
        e
        for e in _calls(Pools(world), refuse=True)
        if e[1] not in _NO_ARGUMENTS or e[0] == CONTACTS_INTERFACE
    ]
    return st.sampled_from(entries).flatmap(
        lambda e: e[3].map(lambda body: Call(e[0], e[1], e[2], list(body), refused=True))
    )


# -- running ----------------------------------------------------------------------------


async def make_call(client: RoostClient, call: Call, stats: FuzzStats, world: FuzzWorld) -> None:
    """Send ``call`` and judge its answer (and, for a refused call, the tables around it).

    Raises:
        AssertionError: an answer the daemon may not give, a refused call that was
            answered, or a table that a refused call changed.
    """
    before = await asyncio.to_thread(snapshot, world.database) if call.refused else None
    what = f"{call.interface}.{call.member}({call.body!r:.300})"
    stats.calls += 1
    stats.members.add(f"{call.interface}.{call.member}")
    try:
        await client.call(call.interface, call.member, call.signature, call.body)
    except RoostDBusError as err:
        stats.errors[err.name] += 1
        if call.wrong_signature:
            assert err.name in WRONG_SIGNATURE, f"{what}: {err}"
        else:
            assert err.name.startswith(ERROR_PREFIX), f"{what}: {err}"
            assert err.name != ERROR_INTERNAL, f"{what}: {err}"
            assert err.message and "Traceback" not in err.message, f"{what}: {err}"
    else:
        stats.successes[call.member] += 1
        assert not call.wrong_signature, f"{what} was answered with another signature"
        assert not call.refused, f"{what} was answered; it should have been refused"
    if before is not None:
        after = await asyncio.to_thread(snapshot, world.database)
        stats.refused_compared += 1
        changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
        if changed:
            stats.table_changes.append(f"{what} changed {', '.join(changed)}")
        assert not changed, f"{what} was refused but changed {', '.join(changed)}"
    assert alive(world.pid), f"roostd died after {what}"


def run_fuzz(
    loop: asyncio.AbstractEventLoop,
    client: RoostClient,
    world: FuzzWorld,
    strategy: st.SearchStrategy[Call],
    examples: int,
    stats: FuzzStats,
    *,
    shrink: bool = True,
    on_call: Callable[[FuzzStats], None] | None = None,
) -> None:
    """Make ``examples`` calls drawn from ``strategy`` on ``loop``, judging each."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(call: Call) -> None:
        loop.run_until_complete(make_call(client, call, stats, world))
        if on_call is not None:
            on_call(stats)

    one()
