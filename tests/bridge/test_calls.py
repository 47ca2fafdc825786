"""Profiles and Storage through the bus, against ``roostd`` running as a subprocess.

One daemon serves the whole module; each test uses profile names of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from typing import Any

import pytest
from dbus_fast import Variant

from roost.bridge.client import (
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    RoostClient,
    RoostDBusError,
)
from roost.bridge.constants import BUS_NAME, OBJECT_PATH
from roost.bridge.marshal import variant_to_json
from tests.fixtures.dbus import Roostd

pytestmark = pytest.mark.dbus

_names = itertools.count()


def fresh(prefix: str = "p") -> str:
    """A profile name no other test of the module uses."""
    return f"{prefix}{next(_names)}"


async def test_version_is_the_installed_one(roost_client: RoostClient) -> None:
    from importlib.metadata import version

    assert await roost_client.version() == version("roost")


async def test_create_list_delete(roost_client: RoostClient) -> None:
    name = fresh()
    await roost_client.create_profile(
        name, "Me@Example.org", "secret", {"host": "127.0.0.1", "port": 5222, "tls": "none"}
    )
    assert name in await roost_client.list_profiles()
    with pytest.raises(ConflictError, match="exists already"):
        await roost_client.create_profile(name, "me@example.org", "x")
    await roost_client.delete_profile(name)
    assert name not in await roost_client.list_profiles()
    with pytest.raises(NotFoundError, match=name):
        await roost_client.delete_profile(name)


@pytest.mark.parametrize(
    ("name", "jid", "password", "options", "says"),
    [
        ("", "me@example.org", "pw", {}, "invalid profile name"),
        ("a b", "me@example.org", "pw", {}, "invalid profile name"),
        ("x" * 65, "me@example.org", "pw", {}, "invalid profile name"),
        ("ok", "", "pw", {}, "the JID is empty"),
        ("ok", "me@example.org/res", "pw", {}, "has a resource"),
        ("ok", "example.org", "pw", {}, "no local part"),
        ("ok", "me@@example.org", "pw", {}, "invalid JID"),
        ("ok", "me@example.org", "", {}, "password is empty"),
        ("ok", "me@example.org", "pw", {"port": Variant("u", 0)}, "port must be"),
        ("ok", "me@example.org", "pw", {"port": Variant("s", "5222")}, "port must be"),
        ("ok", "me@example.org", "pw", {"tls": Variant("s", "maybe")}, "tls must be"),
        ("ok", "me@example.org", "pw", {"autoconnect": Variant("i", 1)}, "autoconnect"),
        ("ok", "me@example.org", "pw", {"colour": Variant("s", "red")}, "unknown profile option"),
    ],
)
async def test_create_refuses_bad_arguments(
    roost_client: RoostClient, name: str, jid: str, password: str, options: Any, says: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=says) as caught:
        await roost_client.create_profile(name, jid, password, options)
    assert caught.value.name == "org.roost.Backend1.Error.InvalidArgument"
    assert "ok" not in await roost_client.list_profiles()


async def test_port_accepts_i_and_q(roost_client: RoostClient) -> None:
    for signature in "iq":
        name = fresh()
        await roost_client.create_profile(
            name, "me@example.org", "pw", {"port": Variant(signature, 5223)}
        )
        assert name in await roost_client.list_profiles()


async def test_default_property_and_its_signal(roost_client: RoostClient) -> None:
    first, second = fresh(), fresh()
    await roost_client.create_profile(first, "a@example.org", "pw")
    await roost_client.create_profile(second, "b@example.org", "pw")
    changes: asyncio.Queue[str] = asyncio.Queue()
    stop = await roost_client.on_default_changed(changes.put_nowait)
    try:
        await roost_client.set_default_profile(second)
        assert await asyncio.wait_for(changes.get(), 5) == second
        assert await roost_client.get_default_profile() == second
        with pytest.raises(NotFoundError):
            await roost_client.set_default_profile("nobody-here")
        assert await roost_client.get_default_profile() == second
        # Deleting the default profile leaves no default, and says so.
        await roost_client.delete_profile(second)
        assert await asyncio.wait_for(changes.get(), 5) == ""
        assert await roost_client.get_default_profile() == ""
    finally:
        stop()


async def test_params_per_profile_and_global(roost_client: RoostClient) -> None:
    name = fresh()
    await roost_client.create_profile(name, "c@example.org", "pw")
    seen: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue()
    stop = await roost_client.on_param_changed(lambda *args: seen.put_nowait(args))
    try:
        await roost_client.set_param(name, "ui", "theme", "dark")
        assert await asyncio.wait_for(seen.get(), 5) == (name, "ui", "theme", "dark")
        await roost_client.set_param("@global@", "ui", "theme", "light")
        assert await asyncio.wait_for(seen.get(), 5) == ("@global@", "ui", "theme", "light")
    finally:
        stop()
    assert await roost_client.get_param(name, "ui", "theme") == "dark"
    assert await roost_client.get_param("@global@", "ui", "theme") == "light"
    assert await roost_client.list_params(name, "ui") == {"theme": "dark"}
    with pytest.raises(NotFoundError, match="no parameter"):
        await roost_client.get_param(name, "ui", "font")
    with pytest.raises(NotFoundError, match="no profile named"):
        await roost_client.get_param("ghost", "ui", "theme")
    with pytest.raises(ForbiddenError, match="reserves"):
        await roost_client.set_param(name, "@roost", "x", "y")


VALUES = [
    Variant("s", "text"),
    Variant("x", -(2**63)),
    Variant("t", 2**64 - 1),
    Variant("d", 0.1),
    Variant("b", False),
    Variant("as", ["a", "b"]),
    Variant("a{sv}", {"n": Variant("i", 1), "l": Variant("av", [Variant("s", "x")])}),
    Variant("a{ias}", {1: ["x"], -2: []}),
    Variant("(sidb)", ["s", 1, 2.5, True]),
    Variant("ay", b"\x00\x01\xfe"),
    Variant("v", Variant("v", Variant("u", 7))),
    Variant("aa{sv}", [{}, {"k": Variant("ay", b"")}]),
]


async def test_values_round_trip_with_their_type(roost_client: RoostClient) -> None:
    for index, value in enumerate(VALUES):
        await roost_client.set_value("@global@", "test.types", f"k{index}", value)
    stored = await roost_client.get_values("@global@", "test.types")
    # dbus-fast reads structs back as tuples: compare the typed JSON forms.
    assert {key: variant_to_json(value) for key, value in stored.items()} == {
        f"k{index}": variant_to_json(value) for index, value in enumerate(VALUES)
    }


async def test_values_per_profile_and_delete(roost_client: RoostClient) -> None:
    name = fresh()
    await roost_client.create_profile(name, "d@example.org", "pw")
    await roost_client.set_value(name, "app", "k", Variant("s", "mine"))
    await roost_client.set_value("@global@", "app", "k", Variant("s", "everyone's"))
    assert await roost_client.get_values(name, "app", ["k", "absent"]) == {
        "k": Variant("s", "mine")
    }
    await roost_client.delete_value(name, "app", "k")
    assert await roost_client.get_values(name, "app", ["k"]) == {}
    assert await roost_client.get_values("@global@", "app", ["k"]) == {
        "k": Variant("s", "everyone's")
    }
    with pytest.raises(NotFoundError):
        await roost_client.delete_value(name, "app", "k")


async def test_a_value_over_the_limit_is_refused(roost_client: RoostClient) -> None:
    with pytest.raises(InvalidArgumentError, match="more than the 65536 allowed"):
        await roost_client.set_value("@global@", "big", "k", Variant("s", "x" * 70_000))
    with pytest.raises(InvalidArgumentError, match="not JSON compliant"):
        await roost_client.set_value("@global@", "big", "k", Variant("d", float("nan")))
    assert await roost_client.get_values("@global@", "big") == {}


async def test_deleting_a_profile_removes_everything_of_it(
    roost_client: RoostClient, roostd: Roostd
) -> None:
    import sqlite3

    name = fresh()
    await roost_client.create_profile(name, "e@example.org", "pw")
    await roost_client.set_param(name, "ui", "x", "1")
    await roost_client.set_value(name, "app", "k", Variant("s", "v"))
    await roost_client.delete_profile(name)
    # Recreated under the same name, the profile starts empty.
    await roost_client.create_profile(name, "e@example.org", "pw")
    assert await roost_client.list_params(name, "ui") == {}
    assert await roost_client.get_values(name, "app") == {}
    with sqlite3.connect(roostd.database) as db:
        orphans = db.execute(
            "SELECT (SELECT count(*) FROM params WHERE profile_id IS NOT NULL AND profile_id "
            "NOT IN (SELECT id FROM profiles)) + (SELECT count(*) FROM kv_store WHERE "
            "profile_id IS NOT NULL AND profile_id NOT IN (SELECT id FROM profiles))"
        ).fetchone()[0]
    assert orphans == 0


async def test_connection_methods_on_an_unknown_profile(roost_client: RoostClient) -> None:
    with pytest.raises(NotFoundError):
        await roost_client.connect_profile("nobody-here")
    with pytest.raises(InvalidArgumentError):
        await roost_client.is_connected("bad name")


async def test_the_password_never_leaves(roost_client: RoostClient, roostd: Roostd) -> None:
    name = fresh()
    password = "pw-that-must-not-show-7f3a"
    await roost_client.create_profile(name, "f@example.org", password)
    with pytest.raises(RoostDBusError):
        await roost_client.create_profile(name, "f@example.org", password)
    assert password not in roostd.log_text()


def gdbus(roostd: Roostd, method: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``gdbus call`` as an outside client would."""
    return subprocess.run(
        ["gdbus", "call", "--address", roostd.bus_address, "--dest", BUS_NAME,
         "--object-path", OBJECT_PATH, "--method", method, *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def busctl(roostd: Roostd, interface: str, method: str, *args: str) -> Any:
    """``busctl --json=short call``, its output parsed."""
    done = subprocess.run(
        ["busctl", f"--address={roostd.bus_address}", "--json=short", "call", BUS_NAME,
         OBJECT_PATH, interface, method, *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(done.stdout) if done.stdout.strip() else None


async def test_outside_clients_gdbus_and_busctl(roostd: Roostd) -> None:
    name = fresh("cli")
    done = await asyncio.to_thread(
        gdbus, roostd, "org.roost.Backend1.Profiles.Create", name, "g@example.org", "pw",
        "{'port': <uint32 5222>, 'autoconnect': <false>}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = await asyncio.to_thread(busctl, roostd, "org.roost.Backend1.Profiles", "List")
    assert listed["type"] == "as" and name in listed["data"][0]

    await asyncio.to_thread(
        busctl, roostd, "org.roost.Backend1.Storage", "SetValue", "sssv", name, "cli", "n",
        "ai", "3", "1", "2", "3",
    )  # fmt: skip
    got = await asyncio.to_thread(
        busctl, roostd, "org.roost.Backend1.Storage", "GetValues", "ssas", name, "cli", "1", "n"
    )
    assert got == {"type": "a{sv}", "data": [{"n": {"type": "ai", "data": [1, 2, 3]}}]}

    refused = await asyncio.to_thread(
        gdbus, roostd, "org.roost.Backend1.Storage.GetParam", name, "", "x"
    )
    assert refused.returncode != 0
    assert "org.roost.Backend1.Error.InvalidArgument" in refused.stderr
    assert "category is empty" in refused.stderr
