"""``roost param`` and ``roost value`` against roostd: values keep their D-Bus type."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from roost.bridge.client import RoostClient
from roost.cli.exit_codes import ExitCode
from tests.cli.conftest import RoostCli, cli_env
from tests.cli.pubsub_helpers import one_line_error
from tests.fixtures.dbus import PrivateBus

pytestmark = pytest.mark.dbus


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def profile(roost_cli: RoostCli) -> str:
    """A profile of the module's daemon, never connected."""
    name = fresh("s")
    made = roost_cli("profile", "create", name, f"{name}@example.org", input="pw\n")
    assert made.code == 0, made.stderr
    return name


def test_params_set_get_and_list(roost_cli: RoostCli, profile: str) -> None:
    category = fresh("ui")
    assert roost_cli("param", "list", category, "-p", profile, "--json").json() == {}
    assert roost_cli("param", "set", category, "theme", "dark", "-p", profile).code == 0
    assert roost_cli("param", "set", category, "font", "Sans 11", "-p", profile).code == 0
    got = roost_cli("param", "get", category, "font", "-p", profile)
    assert (got.code, got.stdout) == (0, "Sans 11\n")
    assert roost_cli("param", "get", category, "theme", "-p", profile, "--json").json() == {
        "theme": "dark"
    }
    assert roost_cli("param", "list", category, "-p", profile, "--json").json() == {
        "font": "Sans 11",
        "theme": "dark",
    }
    human = roost_cli("param", "list", category, "-p", profile)
    assert human.code == 0 and "Sans 11" in human.stdout
    # Global parameters are apart from the profile's.
    assert roost_cli("param", "set", category, "theme", "light", "--global").code == 0
    assert roost_cli("param", "get", category, "theme", "--global").stdout == "light\n"
    assert roost_cli("param", "get", category, "theme", "-p", profile).stdout == "dark\n"


def test_param_errors(roost_cli: RoostCli, profile: str) -> None:
    category = fresh("ui")
    line = one_line_error(roost_cli("param", "get", category, "nothing", "-p", profile), 4)
    assert "nothing" in line
    one_line_error(roost_cli("param", "get", category, "x", "-p", fresh("ghost")), 4)
    one_line_error(roost_cli("param", "set", "@roost", "x", "y", "-p", profile), 7)
    one_line_error(roost_cli("param", "set", category, "x", "y" * 70_000, "-p", profile), 3)
    usage = roost_cli("param", "get", category, "x", "-p", profile, "--global")
    assert usage.code == ExitCode.USAGE
    assert roost_cli("param", "get", category).code == ExitCode.USAGE


# (--type, the text given, what the daemon stores, what --json shows)
TYPED: list[tuple[str, str, Variant, Any]] = [
    ("s", "hello world", Variant("s", "hello world"), "hello world"),
    ("s", "[1, 2]", Variant("s", "[1, 2]"), "[1, 2]"),
    ("i", "-42", Variant("i", -42), -42),
    ("u", "7", Variant("u", 7), 7),
    ("x", "9007199254740993", Variant("x", 9007199254740993), 9007199254740993),
    ("t", "0x10", Variant("t", 16), 16),
    ("y", "255", Variant("y", 255), 255),
    ("b", "true", Variant("b", True), True),
    ("b", "no", Variant("b", False), False),
    ("d", "2.5", Variant("d", 2.5), 2.5),
    ("as", '["a.txt", "b.txt"]', Variant("as", ["a.txt", "b.txt"]), ["a.txt", "b.txt"]),
    ("ai", "[]", Variant("ai", []), []),
    ("(ii)", "[800, 600]", Variant("(ii)", (800, 600)), [800, 600]),
    ("ay", "[0, 1, 255]", Variant("ay", b"\x00\x01\xff"), [0, 1, 255]),
    (
        "a{sv}",
        '{"name": "x", "n": 3, "on": true, "tags": ["a"]}',
        Variant(
            "a{sv}",
            {
                "name": Variant("s", "x"),
                "n": Variant("x", 3),
                "on": Variant("b", True),
                "tags": Variant("as", ["a"]),
            },
        ),
        {"name": "x", "n": 3, "on": True, "tags": ["a"]},
    ),
    ("a{is}", '{"1": "one", "2": "two"}', Variant("a{is}", {1: "one", 2: "two"}), None),
    ("v", "3.5", Variant("v", Variant("d", 3.5)), 3.5),
    (
        "a(sb)",
        '[["x", true], ["y", false]]',
        Variant("a(sb)", [("x", True), ("y", False)]),
        [["x", True], ["y", False]],
    ),
]


async def test_values_keep_their_type(
    roost_cli: RoostCli, roost_client: RoostClient, profile: str
) -> None:
    namespace = fresh("app")
    for n, (signature, text, _stored, _shown) in enumerate(TYPED):
        # After '--', a value may start with '-' (a negative number).
        done = roost_cli(
            "value", "set", "--type", signature, "-p", profile, "--", namespace, f"k{n}", text
        )
        assert done.code == 0, (signature, text, done.stderr)
    stored = await roost_client.get_values(profile, namespace)
    for n, (signature, _text, expected, _shown) in enumerate(TYPED):
        assert stored[f"k{n}"].signature == signature
        assert stored[f"k{n}"] == expected, signature

    shown = roost_cli("value", "get", namespace, "-p", profile, "--json").json()
    assert set(shown) == {f"k{n}" for n in range(len(TYPED))}
    for n, (signature, _text, _stored, value) in enumerate(TYPED):
        entry = shown[f"k{n}"]
        assert entry["signature"] == signature
        if value is not None:
            assert entry["value"] == value, signature
    assert shown[f"k{TYPED.index(next(t for t in TYPED if t[0] == 'a{is}'))}"]["value"] == {
        "1": "one",
        "2": "two",
    }
    # Chosen keys only; the human table shows each type.
    some = roost_cli("value", "get", namespace, "k0", "k2", "-p", profile, "--json").json()
    assert some == {
        "k0": {"signature": "s", "value": "hello world"},
        "k2": {"signature": "i", "value": -42},
    }
    table = roost_cli("value", "get", namespace, "-p", profile)
    assert table.code == 0 and "(ii)" in table.stdout and "a{sv}" in table.stdout

    # A value set by another client with a type the command line has no shortcut for.
    await roost_client.set_value(profile, namespace, "deep", Variant("a{s(ia{sv})}", {}))
    deep = roost_cli("value", "get", namespace, "deep", "-p", profile, "--json").json()
    assert deep == {"deep": {"signature": "a{s(ia{sv})}", "value": {}}}

    assert roost_cli("value", "delete", namespace, "k0", "-p", profile).code == 0
    line = one_line_error(roost_cli("value", "get", namespace, "k0", "-p", profile), 4)
    assert "k0" in line
    one_line_error(roost_cli("value", "delete", namespace, "k0", "-p", profile), 4)
    assert "k0" not in roost_cli("value", "get", namespace, "-p", profile, "--json").json()


def test_global_values_and_the_default_type(roost_cli: RoostCli) -> None:
    namespace = fresh("app")
    assert roost_cli("value", "get", namespace, "--global", "--json").json() == {}
    empty = roost_cli("value", "get", namespace, "--global")
    assert empty.code == 0 and "nothing stored" in empty.stdout
    assert roost_cli("value", "set", namespace, "theme", "dark", "--global").code == 0
    assert roost_cli("value", "get", namespace, "--global", "--json").json() == {
        "theme": {"signature": "s", "value": "dark"}
    }


@pytest.mark.parametrize(
    ("signature", "text", "says"),
    [
        ("i", "abc", "not a value of type i"),
        ("i", "3000000000", "not a value of type i"),
        ("u", "-1", "not a value of type u"),
        ("y", "256", "not a value of type y"),
        ("b", "maybe", "boolean"),
        ("d", "fast", "not a value of type d"),
        ("as", "a.txt", "JSON"),
        ("as", "[1, 2]", "not a string"),
        ("(ii)", "[1]", "struct"),
        ("a{sv}", "[1]", "JSON object"),
        ("a{is}", '{"one": "x"}', "not a value of type a{is}"),
        ("ay", "[256]", "not a value of type ay"),
        ("v", "null", "null"),
        ("h", "3", "not a value of type h"),
        ("a{", "[]", "not a D-Bus signature"),
        ("ii", "1", "single D-Bus type"),
        ("zz", "1", "not a D-Bus signature"),
    ],
)
def test_a_value_not_of_its_type_is_refused_before_the_daemon(
    roost_cli: RoostCli, signature: str, text: str, says: str
) -> None:
    result = roost_cli("value", "set", "--type", signature, "--global", "--", "app", "k", text)
    assert says in one_line_error(result, ExitCode.INVALID_ARGUMENT)


def test_the_daemon_refusals_and_unknown_profiles(roost_cli: RoostCli, profile: str) -> None:
    one_line_error(roost_cli("value", "set", "@reserved", "k", "v", "-p", profile), 7)
    one_line_error(roost_cli("value", "set", "app", "k", "x" * 70_000, "-p", profile), 3)
    ghost = fresh("ghost")
    one_line_error(roost_cli("value", "set", "app", "k", "v", "-p", ghost), 4)
    one_line_error(roost_cli("value", "get", "app", "-p", ghost), 4)
    one_line_error(roost_cli("param", "list", "ui", "-p", ghost, "--json"), 4)


def test_without_a_daemon(test_bus: PrivateBus, tmp_path: Path) -> None:
    cli = RoostCli(test_bus.address, cli_env(tmp_path))
    for args in (
        ["param", "list", "ui", "--global", "--json"],
        ["param", "get", "ui", "x", "--global"],
        ["value", "get", "app", "--global", "--json"],
        ["value", "set", "app", "k", "v", "--global"],
        ["value", "delete", "app", "k", "--global"],
    ):
        one_line_error(cli(*args), ExitCode.DAEMON_NOT_RUNNING)
    # A value that is not of its type is refused without asking anybody.
    one_line_error(cli("value", "set", "app", "k", "x", "--type", "i", "--global"), 3)
