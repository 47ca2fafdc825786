"""``roost profile``: every subcommand against roostd, connections against Prosody."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from roost.bridge.client import RoostClient
from roost.cli.exit_codes import ExitCode
from tests.cli.conftest import COMMAND_TIMEOUT, RoostCli, cli_env, roost_command
from tests.cli.pubsub_helpers import one_line_error, run
from tests.fixtures.dbus import PrivateBus, RoostdLauncher
from tests.fixtures.tls_prosody import TlsProsodyServer, tls_prosody_server
from tests.fixtures.world import unique_names
from tests.fixtures.xmpp import XmppServer, free_port

pytestmark = pytest.mark.dbus
__all__ = ["tls_prosody_server"]


def new_name() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def closed_port_options() -> list[str]:
    """Options of a profile whose server is a loopback port nobody listens on."""
    return ["--host", "127.0.0.1", "--port", str(free_port()), "--tls", "none"]


def test_create_list_status_and_delete(roost_cli: RoostCli) -> None:
    name = new_name()
    created = roost_cli(
        "profile", "create", name, f"{name}@example.org", *closed_port_options(), input="pw\n"
    )
    assert created.code == 0, created.stderr
    assert f"Profile {name} created" in created.stderr

    listed = roost_cli("profile", "list", "--json").json()
    assert set(listed) == {"default", "profiles"}
    entry = {"name": name, "default": listed["default"] == name}
    assert entry in listed["profiles"]
    assert all(set(p) == {"name", "default"} for p in listed["profiles"])
    human = roost_cli("profile", "list")
    assert human.code == 0 and name in human.stdout

    one = roost_cli("profile", "status", name, "--json").json()
    assert one == {"profiles": [{"name": name, "connected": False, "default": entry["default"]}]}
    every = roost_cli("profile", "status", "--json").json()
    assert {"name": name, "connected": False, "default": entry["default"]} in every["profiles"]
    assert f"{name}: not connected" in roost_cli("profile", "status", name).stdout

    deleted = roost_cli("profile", "delete", name)
    assert deleted.code == 0, deleted.stderr
    assert name not in [
        p["name"] for p in roost_cli("profile", "list", "--json").json()["profiles"]
    ]
    assert "no profile named" in one_line_error(roost_cli("profile", "delete", name), 4)


def test_refusals_exit_with_their_family_code(roost_cli: RoostCli) -> None:
    name = new_name()
    jid = f"{name}@example.org"
    assert roost_cli("profile", "create", name, jid, input="pw\n").code == 0
    # The daemon's refusals.
    one_line_error(roost_cli("profile", "create", name, jid, input="pw\n"), ExitCode.CONFLICT)
    one_line_error(roost_cli("profile", "create", "bad name!", jid, input="pw\n"), 3)
    one_line_error(roost_cli("profile", "create", new_name(), "not a jid", input="pw\n"), 3)
    one_line_error(roost_cli("profile", "create", new_name(), f"{jid}/phone", input="pw\n"), 3)
    # No password: refused before the daemon is asked.
    assert "no password" in one_line_error(roost_cli("profile", "create", new_name(), jid), 3)
    # The command line itself.
    usage = roost_cli("profile", "create", new_name(), jid, "--tls", "maybe", input="pw\n")
    assert usage.code == ExitCode.USAGE and "--tls" in usage.stderr
    assert roost_cli("profile", "create", new_name(), jid, "--port", "0").code == 2
    assert roost_cli("profile", "create", new_name()).code == 2
    # Unknown profiles.
    ghost = new_name()
    for args in (
        ["status", ghost],
        ["connect", ghost],
        ["disconnect", ghost],
        ["default", ghost],
        ["delete", ghost],
    ):
        line = one_line_error(roost_cli("profile", *args), ExitCode.NOT_FOUND)
        assert ghost in line, args
    one_line_error(roost_cli("profile", "status", "--json", "bad name!"), 3)
    assert name in [p["name"] for p in roost_cli("profile", "list", "--json").json()["profiles"]]


@pytest.mark.xmpp
async def test_the_password_is_the_first_line_of_stdin_only(
    roost_cli: RoostCli, prosody_server: XmppServer
) -> None:
    (user,) = unique_names("clipassword", 1)
    await prosody_server.register_many([user])
    jid, password, _options = prosody_server.credentials(user)
    where = ["--host", prosody_server.host, "--port", str(prosody_server.port), "--tls", "none"]
    right, wrong = new_name(), new_name()
    # A second line is not part of the password: the login works.
    made = await run(
        roost_cli, "profile", "create", right, jid, *where, input=f"{password}\nnot this\n"
    )
    assert made.code == 0, made.stderr
    connected = await run(roost_cli, "profile", "connect", right)
    assert connected.code == 0, connected.stderr
    status = await run(roost_cli, "profile", "status", right, "--json")
    assert status.json()["profiles"][0]["connected"] is True
    assert (await run(roost_cli, "profile", "disconnect", right)).code == 0
    # A wrong password is the server's refusal of the login: not connected.
    made = await run(roost_cli, "profile", "create", wrong, jid, *where, input="nope\n")
    assert made.code == 0
    line = one_line_error(await run(roost_cli, "profile", "connect", wrong), 5)
    assert wrong in line


def test_default_shows_sets_and_unsets(roostd_launcher: RoostdLauncher, tmp_path: Path) -> None:
    daemon = roostd_launcher.start()
    cli = RoostCli(daemon.bus_address, cli_env(tmp_path))
    nothing = cli("profile", "default")
    assert nothing.code == 0 and nothing.stdout == "" and "No default" in nothing.stderr
    assert cli("profile", "list", "--json").json() == {"default": "", "profiles": []}
    assert cli("profile", "default", "--json").json() == {"default": ""}
    assert cli("profile", "status", "--json").json() == {"profiles": []}
    assert cli("profile", "status", "").code == ExitCode.NOT_FOUND
    for name in ("first", "second"):
        assert cli("profile", "create", name, f"{name}@example.org", input="pw\n").code == 0
    # The first profile created became the default.
    assert cli("profile", "default").stdout == "first\n"
    assert cli("profile", "default", "second").code == 0
    assert cli("profile", "default").stdout == "second\n"
    assert cli("profile", "default", "--json").json() == {"default": "second"}
    assert cli("profile", "list", "--json").json() == {
        "default": "second",
        "profiles": [
            {"name": "first", "default": False},
            {"name": "second", "default": True},
        ],
    }
    assert cli("profile", "status", "", "--json").json() == {
        "profiles": [{"name": "second", "connected": False, "default": True}]
    }
    assert cli("profile", "default", "second", "--unset").code == ExitCode.USAGE
    assert cli("profile", "default", "--unset").code == 0
    assert cli("profile", "default").stdout == ""
    # Without a default, a command that needs one says so.
    one_line_error(cli("profile", "connect"), ExitCode.NOT_FOUND)
    # Deleting the default leaves none.
    assert cli("profile", "default", "first").code == 0
    assert cli("profile", "delete", "first", "--yes").code == 0
    assert cli("profile", "list", "--json").json()["default"] == ""


async def test_connecting_to_a_closed_port_is_not_connected(roost_cli: RoostCli) -> None:
    name = new_name()
    made = await run(
        roost_cli,
        *["profile", "create", name, f"{name}@example.org", *closed_port_options()],
        input="pw\n",
    )
    assert made.code == 0
    line = one_line_error(await run(roost_cli, "profile", "connect", name), 5)
    assert "unreachable" in line and "127.0.0.1" in line
    assert (await run(roost_cli, "profile", "status", name, "--json")).json()["profiles"][0][
        "connected"
    ] is False


@pytest.mark.xmpp
async def test_connect_and_disconnect_against_a_server(
    roost_cli: RoostCli, xmpp_server: XmppServer
) -> None:
    (user,) = unique_names("cliprofile", 1)
    await xmpp_server.register_many([user])
    jid, password, options = xmpp_server.credentials(user)
    name = new_name()
    where = ["--host", str(options["host"]), "--port", str(options["port"]), "--tls", "none"]
    made = await run(
        roost_cli, "profile", "create", name, jid, *where, "--no-autoconnect", input=password
    )
    assert made.code == 0, made.stderr
    connected = await run(roost_cli, "profile", "connect", name)
    assert connected.code == 0, connected.stderr
    status = (await run(roost_cli, "profile", "status", name, "--json")).json()
    assert status["profiles"][0]["connected"] is True
    assert (await run(roost_cli, "profile", "disconnect", name)).code == 0
    status = (await run(roost_cli, "profile", "status", name, "--json")).json()
    assert status["profiles"][0]["connected"] is False
    assert (await run(roost_cli, "profile", "delete", name)).code == 0


def test_without_a_daemon_every_command_says_so(test_bus: PrivateBus, tmp_path: Path) -> None:
    cli = RoostCli(test_bus.address, cli_env(tmp_path))
    for args in (
        ["profile", "list"],
        ["profile", "list", "--json"],
        ["profile", "status"],
        ["profile", "default"],
        ["profile", "connect", "x"],
    ):
        line = one_line_error(cli(*args), ExitCode.DAEMON_NOT_RUNNING)
        assert "not running" in line, args
    gone = RoostCli(f"unix:path={tmp_path / 'no-bus-here'}", cli_env(tmp_path))
    line = one_line_error(gone("profile", "list"), ExitCode.DAEMON_NOT_RUNNING)
    assert "cannot reach" in line


def test_on_a_terminal_the_password_is_asked_twice_and_hidden(roost_cli: RoostCli) -> None:
    name = new_name()
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                *roost_command(),
                "--bus-address",
                roost_cli.bus_address,
                "profile",
                "create",
                name,
                f"{name}@example.org",
            ],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env=roost_cli.env,
            start_new_session=True,
        )
        os.close(secondary)
        secondary = -1
        seen = b""

        def until(text: bytes) -> None:
            nonlocal seen
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while text not in seen:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {text!r} on the terminal: {seen!r}"
                ready, _, _ = select.select([primary], [], [], remaining)
                if ready:
                    try:
                        chunk = os.read(primary, 4096)
                    except OSError:  # the command closed the terminal
                        chunk = b""
                    assert chunk, f"the terminal closed before {text!r}: {seen!r}"
                    seen += chunk

        until(b"Password for")
        os.write(primary, b"s3cret-typed\n")
        until(b"Repeat for confirmation")
        os.write(primary, b"s3cret-typed\n")
        until(b"created")
        assert process.wait(COMMAND_TIMEOUT) == 0
        assert b"s3cret-typed" not in seen  # never echoed
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    listed = roost_cli("profile", "list", "--json").json()
    assert name in [p["name"] for p in listed["profiles"]]


def test_shell_completion_comes_from_click(tmp_path: Path) -> None:
    env = cli_env(tmp_path)

    def complete(*words: str) -> list[str]:
        done = subprocess.run(
            roost_command(),
            env={
                **env,
                "_ROOST_COMPLETE": "bash_complete",
                "COMP_WORDS": " ".join(["roost", *words]),
                "COMP_CWORD": str(len(words)),
            },
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    script = subprocess.run(
        roost_command(),
        env={**env, "_ROOST_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert script.returncode == 0 and "_roost_completion" in script.stdout
    assert {"profile", "contacts", "param", "value", "watch"} <= set(complete(""))
    assert complete("profile", "st") == ["status"]
    assert complete("profile", "create", "a", "b", "--tls", "") == [
        "required",
        "starttls",
        "none",
    ]


def imported_packages(cli: RoostCli, *args: str) -> set[str]:
    """The top-level packages ``roost ARGS`` imports (``-X importtime``)."""
    script = roost_command()
    command = [sys.executable, "-X", "importtime", *script[-1:]] if len(script) == 1 else script
    done = subprocess.run(
        [*command, "--bus-address", cli.bus_address, *args],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_the_command_never_imports_the_daemons_libraries(roost_cli: RoostCli) -> None:
    daemon_side = {"sqlalchemy", "slixmpp", "alembic", "aiosqlite", "lxml"}
    for args in (["--help"], ["profile", "--help"], ["watch", "--help"]):
        found = imported_packages(roost_cli, *args)
        assert "click" in found
        assert not found & (daemon_side | {"rich", "dbus_fast"}), args
    found = imported_packages(roost_cli, "profile", "list", "--json")
    assert "dbus_fast" in found and not found & (daemon_side | {"rich"})
    assert not imported_packages(roost_cli, "profile", "list") & daemon_side


@pytest.mark.xmpp
async def test_autoconnect_connects_when_the_daemon_starts(
    roostd_launcher: RoostdLauncher, tmp_path: Path, prosody_server: XmppServer
) -> None:
    (user,) = unique_names("cliauto", 1)
    await prosody_server.register_many([user])
    jid, password, options = prosody_server.credentials(user)
    where = ["--host", str(options["host"]), "--port", str(options["port"]), "--tls", "none"]
    first = roostd_launcher.start()
    cli = RoostCli(first.bus_address, cli_env(tmp_path))
    made = await run(cli, "profile", "create", "auto", jid, *where, "--autoconnect", input=password)
    assert made.code == 0, made.stderr
    made = await run(cli, "profile", "create", "manual", jid, *where, input=password)
    assert made.code == 0, made.stderr
    assert first.terminate() == 0

    # Listening before the daemon starts again, on the same database.
    client = await RoostClient.connect(first.bus_address)
    connected: asyncio.Queue[str] = asyncio.Queue()
    try:
        await client.on_connected(lambda name, _jid: connected.put_nowait(name))
        await asyncio.to_thread(roostd_launcher.start, database=first.database)
        assert await asyncio.wait_for(connected.get(), 60) == "auto"
    finally:
        client.close()
    status = (await run(cli, "profile", "status", "--json")).json()
    assert status == {
        "profiles": [
            {"name": "auto", "connected": True, "default": True},
            {"name": "manual", "connected": False, "default": False},
        ]
    }


def relative_path(path: Path) -> str:
    """``path`` relative to the working directory (the command's too)."""
    return os.path.relpath(path)


@pytest.mark.xmpp
async def test_certificate_options_through_the_command(
    roost_cli: RoostCli, tls_prosody_server: TlsProsodyServer
) -> None:
    server = tls_prosody_server
    jid, password, _options = server.credentials("bob")
    where = ["--host", server.host, "--port", str(server.port), "--tls", "starttls"]

    async def connect_with(*flags: str) -> tuple[int, str]:
        name = new_name()
        made = await run(roost_cli, "profile", "create", name, jid, *where, *flags, input=password)
        assert made.code == 0, made.stderr
        connected = await run(roost_cli, "profile", "connect", name)
        await run(roost_cli, "profile", "delete", name, "--yes")
        return connected.code, connected.stderr

    # The server's certificate is its own making: refused unless the profile says.
    code, stderr = await connect_with()
    assert code == 5 and "cannot be trusted" in stderr, stderr
    assert (await connect_with("--ca-file", str(server.certificate)))[0] == 0
    code, stderr = await connect_with("--ca-file", str(server.other_certificate))
    assert code == 5 and "cannot be trusted" in stderr, stderr
    assert (await connect_with("--no-verify-certificate"))[0] == 0
    # A relative path is made absolute for the daemon, which runs elsewhere.
    assert (await connect_with("--ca-file", relative_path(server.certificate)))[0] == 0
    # A file that is not there is refused before the daemon is asked.
    missing = await run(
        roost_cli, "profile", "create", new_name(), jid, "--ca-file", "/no/such.pem", input="pw\n"
    )
    assert missing.code != 0 and "/no/such.pem" in missing.stderr
