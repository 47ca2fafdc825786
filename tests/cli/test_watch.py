"""``roost watch``: the daemon's signals as other clients and servers cause them.

The command runs as a subprocess; its lines are read with a deadline, each wait for a
line that says what it waits for.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from roost.bridge.client import RoostClient
from roost.cli.commands.watch import READY_LINE
from roost.cli.exit_codes import ExitCode
from tests.cli.conftest import COMMAND_TIMEOUT, RoostCli, cli_env, roost_command
from tests.cli.pubsub_helpers import (
    BLOG_NODE_CONFIG,
    MICROBLOG,
    atom_entry,
    new_profile,
    one_line_error,
    run,
)
from tests.fixtures.dbus import PrivateBus, stop_bus
from tests.fixtures.world import XmppPeer, befriend, unique_names
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.dbus

WAIT = 60.0


class Watcher:
    """``roost watch`` running, its stdout and stderr lines gathered as they come."""

    def __init__(self, bus_address: str, env: dict[str, str], *args: str, shell: str = "") -> None:
        command = [*roost_command(), "--bus-address", bus_address, "watch", *args]
        if shell:
            # The command in a bash pipeline: 'COMMAND | shell' (its status: pipefail).
            quoted = " ".join(shlex.quote(word) for word in command)
            command = ["bash", "-o", "pipefail", "-c", f"{quoted} | {shell}"]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        self._error_lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=_pump, args=(self.process.stdout, self.lines), daemon=True),
            threading.Thread(
                target=_pump, args=(self.process.stderr, self._error_lines), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _next(self, source: queue.Queue[str], deadline: float, what: str) -> str:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"roost watch printed no {what} within {WAIT:g} s; stdout: {self.seen}, "
                f"stderr: {self.errors}"
            )
        try:
            return source.get(timeout=remaining)
        except queue.Empty:
            return self._next(source, deadline, what)

    def ready(self) -> None:
        """Wait until the command says it is watching."""
        deadline = time.monotonic() + WAIT
        while True:
            line = self._next(self._error_lines, deadline, "ready line")
            self.errors.append(line)
            if line.strip() == READY_LINE:
                return

    def wait_line(self, test: Callable[[str], bool], what: str) -> str:
        """The first stdout line from now on that passes ``test``."""
        deadline = time.monotonic() + WAIT
        while True:
            line = self._next(self.lines, deadline, what)
            self.seen.append(line)
            if test(line):
                return line

    def wait_json(self, what: str, **expected: Any) -> dict[str, Any]:
        """The first JSON line from now on whose keys have the ``expected`` values (a
        callable value is a test of the key's value)."""

        def matches(line: str) -> bool:
            event = json.loads(line)
            return all(
                key in event and (value(event[key]) if callable(value) else event[key] == value)
                for key, value in expected.items()
            )

        event: dict[str, Any] = json.loads(self.wait_line(matches, what))
        return event

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(COMMAND_TIMEOUT)

    def rest(self) -> list[str]:
        """Every stdout line after the command ended (call after it exited)."""
        for thread in self._threads:
            thread.join(COMMAND_TIMEOUT)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        while not self._error_lines.empty():
            self.errors.append(self._error_lines.get())
        return self.seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _pump(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    stream.close()


@pytest.fixture
def watchers(roost_cli: RoostCli) -> Iterator[Callable[..., Watcher]]:
    """Start ``roost watch ARGS`` on the module's daemon; each is stopped afterwards."""
    started: list[Watcher] = []

    def start(*args: str, shell: str = "") -> Watcher:
        watcher = Watcher(roost_cli.bus_address, roost_cli.env, *args, shell=shell)
        started.append(watcher)
        watcher.ready()
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


@pytest.mark.xmpp
async def test_watch_shows_what_other_clients_cause(
    roost_cli: RoostCli,
    roost_client: RoostClient,
    xmpp_server: XmppServer,
    watchers: Callable[..., Watcher],
) -> None:
    me, friend, stranger, other = unique_names("cliwatch", 4)
    await xmpp_server.register_many([me, friend, stranger, other])
    me_jid, friend_jid, stranger_jid = (xmpp_server.jid(u) for u in (me, friend, stranger))
    await befriend(xmpp_server, me, friend)
    # The friend's blog exists before the profile connects: the cache synchronises it.
    async with XmppPeer(xmpp_server, friend) as pf:
        await pf.create_node(MICROBLOG, BLOG_NODE_CONFIG)
        await pf.publish(MICROBLOG, "post-1", atom_entry(1))
    profile = await new_profile(roost_client, xmpp_server, me, connect=False)
    other_profile = await new_profile(roost_client, xmpp_server, other, connect=False)

    mine = await asyncio.to_thread(watchers, "--json", "-p", profile)
    everyone = await asyncio.to_thread(watchers)
    # A reader that stops after one line: watching then ends quietly, with 0.
    first_only = await asyncio.to_thread(watchers, "--json", shell="head -n 1")

    # Connected: the other profile first, whose line the filtered watcher never shows.
    assert (await run(roost_cli, "profile", "connect", other_profile)).code == 0
    assert (await run(roost_cli, "profile", "connect", profile)).code == 0
    connected = await asyncio.to_thread(
        mine.wait_json, "Connected", signal="Connected", profile=profile
    )
    assert set(connected) == {"signal", "profile", "jid"}
    assert connected["jid"].startswith(me_jid + "/")
    human = await asyncio.to_thread(
        everyone.wait_line, lambda line: f"Connected {profile}" in line, "a Connected line"
    )
    assert me_jid in human
    assert any(f"Connected {other_profile}" in line for line in everyone.seen)

    # The friend's blog synchronised by the cache after login.
    node = {"service": friend_jid, "node": MICROBLOG}
    await asyncio.to_thread(mine.wait_json, "the sync's progress", signal="SyncProgress", **node)
    done = await asyncio.to_thread(
        mine.wait_json, "the sync's end", signal="SyncStateChanged", state="completed", **node
    )
    assert set(done) == {"signal", "profile", "service", "node", "state"}

    async with XmppPeer(xmpp_server, friend) as pf, XmppPeer(xmpp_server, stranger) as ps:
        # A new post of the friend's: an ItemsEvent with the item as pubsub get shows it.
        await pf.wait_online(me_jid)
        await pf.publish(MICROBLOG, "post-2", atom_entry(2, title="Second post"))
        event = await asyncio.to_thread(
            mine.wait_json,
            "the new post",
            signal="ItemsEvent",
            kind="items",
            items=lambda items: [i["id"] for i in items] == ["post-2"],
            **node,
        )
        assert set(event) == {"signal", "profile", "service", "node", "kind", "items"}
        item = event["items"][0]
        assert "Second post" in item["xml"] and item["parsed"]["title"] == "Second post"

        # A stranger asks to see the profile's presence.
        await ps.request_subscription(me_jid)
        request = await asyncio.to_thread(
            mine.wait_json, "the request", signal="SubscriptionRequest", jid=stranger_jid
        )
        assert request == {
            "signal": "SubscriptionRequest",
            "profile": profile,
            "jid": stranger_jid,
        }

        # The friend removes the profile's account from its roster: both subscriptions go.
        await pf.remove_contact(me_jid)
        change = await asyncio.to_thread(
            mine.wait_json,
            "the roster change",
            signal="ContactChanged",
            contact=lambda c: c["jid"] == friend_jid and c["subscription"] == "none",
        )
        assert set(change["contact"]) >= {"jid", "name", "groups", "subscription", "removed"}
        assert change["contact"]["removed"] is False

    assert (await run(roost_cli, "profile", "disconnect", profile)).code == 0
    gone = await asyncio.to_thread(
        mine.wait_json, "Disconnected", signal="Disconnected", profile=profile
    )
    assert isinstance(gone["reason"], str)
    await run(roost_cli, "profile", "disconnect", other_profile)

    # Ctrl-C ends watching with 0; only this profile's signals were shown.
    assert mine.interrupt() == 0
    lines = [json.loads(line) for line in mine.rest()]
    assert lines and {line["profile"] for line in lines} == {profile}
    assert "Traceback" not in "\n".join(mine.errors)
    assert everyone.interrupt() == 0
    assert await asyncio.to_thread(first_only.process.wait, COMMAND_TIMEOUT) == 0
    (line,) = first_only.rest()
    assert json.loads(line)["signal"] == "Connected"
    assert first_only.errors == [READY_LINE]


def test_sigterm_ends_watching_with_0(roost_cli: RoostCli) -> None:
    watcher = Watcher(roost_cli.bus_address, roost_cli.env, "--json")
    try:
        watcher.ready()
        watcher.process.terminate()
        assert watcher.process.wait(COMMAND_TIMEOUT) == 0
        assert watcher.rest() == []
    finally:
        watcher.stop()


def test_a_lost_bus_ends_watching_with_10(test_bus: PrivateBus, tmp_path: Path) -> None:
    watcher = Watcher(test_bus.address, cli_env(tmp_path), "--json")
    try:
        watcher.ready()
        stop_bus(test_bus)
        assert watcher.process.wait(COMMAND_TIMEOUT) == ExitCode.DAEMON_NOT_RUNNING
        watcher.rest()
        assert any("connection to the bus was lost" in line for line in watcher.errors)
    finally:
        watcher.stop()


def test_without_a_bus_watch_exits_10(tmp_path: Path) -> None:
    nowhere = RoostCli(f"unix:path={tmp_path / 'no-bus'}", cli_env(tmp_path))
    assert "cannot reach" in one_line_error(nowhere("watch", "--json"), 10)
