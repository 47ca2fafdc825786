"""Random arguments of the right D-Bus types at every method of the daemon.

Each call must answer with success or a named Roost error (never ``Internal``, never a
generic dbus-fast error); a refused call must leave the database as it was; and the
daemon must still answer afterwards.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from dbus_fast import Variant
from hypothesis import HealthCheck, given, settings
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
from tests.bridge.strategies import dbus_text, variants
from tests.fixtures.dbus import Roostd

pytestmark = [pytest.mark.dbus, pytest.mark.slow]

names = st.one_of(
    st.sampled_from(["", "fz", "fz1", "@global@", "@roost", "ui", "k", "a b", "x" * 300]),
    dbus_text,
)
# Every profile that can be created points at a closed loopback port, so that a Connect
# never looks anything up or reaches anywhere else.
LOOPBACK_ONLY = {"host": Variant("s", "127.0.0.1"), "port": Variant("u", 1)}
options = st.dictionaries(
    st.one_of(
        st.sampled_from(["tls", "autoconnect"]),
        dbus_text.filter(lambda key: key not in ("host", "port")),
    ),
    st.one_of(
        st.sampled_from(
            [Variant("u", 5222), Variant("i", -1), Variant("s", "starttls"), Variant("b", True)]
        ),
        variants,
    ),
    max_size=4,
).map(lambda extra: {**extra, **LOOPBACK_ONLY})
records = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [
                "max_items",
                "item_ids",
                "before",
                "after",
                "use_cache",
                "profiles",
                "nodes",
                "fts",
                "parsed",
                "order_by",
                "limit",
                "offset",
                "older_than",
                "types",
                "pubsub#max_items",
                "subid",
                "notify",
                "name",
                "groups",
                "subscribe",
            ]
        ),
        dbus_text,
    ),
    st.one_of(
        st.sampled_from(
            [
                Variant("u", 5),
                Variant("s", ""),
                Variant("as", ["x"]),
                Variant("b", False),
                Variant(
                    "aa{sv}",
                    [
                        {
                            "path": Variant("s", "title"),
                            "op": Variant("s", "eq"),
                            "value": Variant("s", "x"),
                        }
                    ],
                ),
                Variant("d", 1.5),
            ]
        ),
        variants,
    ),
    max_size=4,
)
services = st.one_of(
    st.sampled_from(["", "pubsub.example.org", "me@example.org", "bad jid@", "a/b"]), dbus_text
)
target = st.tuples(names, services, names)
jids = st.one_of(
    st.sampled_from(["me@example.org", "me@example.org/r", "example.org", "@", "a@b@c"]),
    dbus_text,
)

# (interface, member, signature, strategy of the body)
CALLS: list[tuple[str, str, str, st.SearchStrategy[list[Any]]]] = [
    (PROFILES_INTERFACE, "Create", "sssa{sv}", st.tuples(names, jids, dbus_text, options)),
    (PROFILES_INTERFACE, "Delete", "s", st.tuples(names)),
    (PROFILES_INTERFACE, "List", "", st.tuples()),
    (PROFILES_INTERFACE, "Connect", "s", st.tuples(names)),
    (PROFILES_INTERFACE, "Disconnect", "s", st.tuples(names)),
    (PROFILES_INTERFACE, "IsConnected", "s", st.tuples(names)),
    (
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        st.tuples(
            st.just(PROFILES_INTERFACE), st.just("Default"), names.map(lambda n: Variant("s", n))
        ),
    ),
    (STORAGE_INTERFACE, "GetParam", "sss", st.tuples(names, names, names)),
    (STORAGE_INTERFACE, "SetParam", "ssss", st.tuples(names, names, names, dbus_text)),
    (STORAGE_INTERFACE, "ListParams", "ss", st.tuples(names, names)),
    (STORAGE_INTERFACE, "GetValues", "ssas", st.tuples(names, names, st.lists(names, max_size=4))),
    (STORAGE_INTERFACE, "SetValue", "sssv", st.tuples(names, names, names, variants)),
    (STORAGE_INTERFACE, "DeleteValue", "sss", st.tuples(names, names, names)),
    (PUBSUB_INTERFACE, "GetItems", "sssa{sv}", st.tuples(names, services, names, records)),
    (
        PUBSUB_INTERFACE,
        "Publish",
        "sssssa{sv}",
        st.tuples(names, services, names, names, dbus_text, records),
    ),
    (
        PUBSUB_INTERFACE,
        "Retract",
        "sssasa{sv}",
        st.tuples(names, services, names, st.lists(names, max_size=3), records),
    ),
    (PUBSUB_INTERFACE, "CreateNode", "sssa{sv}", st.tuples(names, services, names, records)),
    (PUBSUB_INTERFACE, "DeleteNode", "sss", target),
    (PUBSUB_INTERFACE, "PurgeNode", "sss", target),
    (PUBSUB_INTERFACE, "GetNodeConfig", "sss", target),
    (PUBSUB_INTERFACE, "SetNodeConfig", "sssa{sv}", st.tuples(names, services, names, records)),
    (PUBSUB_INTERFACE, "Subscribe", "sssa{sv}", st.tuples(names, services, names, records)),
    (PUBSUB_INTERFACE, "Unsubscribe", "sssa{sv}", st.tuples(names, services, names, records)),
    (PUBSUB_INTERFACE, "GetSubscriptions", "sss", target),
    (CACHE_INTERFACE, "Search", "a{sv}", st.tuples(records)),
    (CACHE_INTERFACE, "GetNodeState", "sss", target),
    (CACHE_INTERFACE, "Sync", "sss", target),
    (CACHE_INTERFACE, "Purge", "a{sv}", st.tuples(records)),
    (CACHE_INTERFACE, "Reset", "", st.tuples()),
    (CACHE_INTERFACE, "ListAnalysers", "", st.tuples()),
    (CONTACTS_INTERFACE, "List", "s", st.tuples(names)),
    (CONTACTS_INTERFACE, "ListRequests", "s", st.tuples(names)),
    (CONTACTS_INTERFACE, "Add", "ssa{sv}", st.tuples(names, jids, records)),
    (CONTACTS_INTERFACE, "Remove", "ss", st.tuples(names, jids)),
    (CONTACTS_INTERFACE, "Authorize", "ssb", st.tuples(names, jids, st.booleans())),
]

calls = st.sampled_from(CALLS).flatmap(
    lambda call: call[3].map(lambda body: (call[0], call[1], call[2], list(body)))
)


def snapshot(database: Any) -> Any:
    """Everything the calls can change, as comparable data."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return [
            sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in (
                "profiles",
                "params",
                "kv_store",
                "roster_items",
                "subscription_requests",
            )
        ]


@pytest.fixture
def session(roostd: Roostd) -> Iterator[tuple[asyncio.AbstractEventLoop, RoostClient]]:
    """A loop of the test's own and a client on it (hypothesis drives a sync test)."""
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(RoostClient.connect(roostd.bus_address))
    yield loop, client
    client.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def test_random_arguments_at_every_method(
    roostd: Roostd, session: tuple[asyncio.AbstractEventLoop, RoostClient]
) -> None:
    loop, client = session
    seen: set[str] = set()

    @settings(
        max_examples=500,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(calls)
    def one_call(call: tuple[str, str, str, list[Any]]) -> None:
        interface, member, signature, body = call
        before = snapshot(roostd.database)
        try:
            loop.run_until_complete(client.call(interface, member, signature, body))
        except RoostDBusError as err:
            assert err.name.startswith(ERROR_PREFIX), (member, body, err)
            assert err.name != ERROR_INTERNAL, (member, body, err)
            assert err.message, (member, body)
            assert snapshot(roostd.database) == before, f"refused {member} changed the data"
            seen.add(err.name)
        assert roostd.process.poll() is None

    one_call()
    # The daemon still answers, and the test did exercise refusals.
    assert isinstance(loop.run_until_complete(client.list_profiles()), list)
    assert ERROR_PREFIX + "InvalidArgument" in seen
    assert ERROR_PREFIX + "NotFound" in seen
