"""``roost blog`` in a real terminal: tmux runs a shell, the test types the command with
``send-keys`` and reads the screen with ``capture-pane``, as a person would see it."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roost.bridge.client import RoostClient
from tests.cli.conftest import cli_env, roost_command
from tests.cli.pubsub_helpers import MICROBLOG
from tests.cli.test_blog import make_blog
from tests.fixtures.dbus import Roostd
from tests.fixtures.xmpp import XmppServer

pytestmark = [
    pytest.mark.xmpp,
    pytest.mark.dbus,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

# How long the screen may take to show what a step brings, on a loaded machine.
SCREEN_TIMEOUT = 60.0
PROMPT = "-- any key: older posts, q: quit --"


class Terminal:
    """A tmux server of the test's own (its own socket), one window running sh."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.socket = directory / "tmux.sock"
        self.env = env
        self.tmux("new-session", "-d", "-s", "cli", "-x", "150", "-y", "60", "sh")

    def tmux(self, *args: str) -> str:
        completed = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return completed.stdout

    def type(self, keys: str, *, enter: bool = False) -> None:
        """Type ``keys`` literally (then Enter)."""
        self.tmux("send-keys", "-t", "cli", "-l", keys)
        if enter:
            self.tmux("send-keys", "-t", "cli", "Enter")

    def screen(self) -> str:
        """Everything the window showed (its history included), lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "cli")

    async def wait_until(self, check: Callable[[str], bool], what: str) -> str:
        """The screen once ``check`` holds for it; the screen is read again until then."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            text = await asyncio.to_thread(self.screen)
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed {what}:\n{text}")
            # tmux offers no event for a screen change: read it again shortly.
            await asyncio.sleep(0.1)

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            env=self.env,
            capture_output=True,
            timeout=30,
        )


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    env = cli_env(tmp_path)
    # A terminal's own width and colours, as a person has them.
    for name in ("COLUMNS", "NO_COLOR"):
        env.pop(name, None)
    env["PS1"] = "$ "
    term = Terminal(tmp_path, env)
    yield term
    term.close()


async def test_reading_a_blog_page_by_page_in_a_terminal(
    terminal: Terminal, roostd: Roostd, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    blog = await make_blog(xmpp_server, roost_client)
    roost = " ".join(shlex.quote(part) for part in roost_command())
    command = (
        f"{roost} --bus-address {shlex.quote(roostd.bus_address)} blog {blog.writer_jid} "
        f"-p {blog.reader} --max 2; echo EXIT=$?"
    )
    terminal.type(command, enter=True)

    first = await terminal.wait_until(lambda s: PROMPT in s, "the first page and the prompt")
    assert "Newest post" in first and "Latest news" in first
    assert "Signed" in first and "Writer Person" in first and "#travel" in first
    assert "Markup" not in first and "posts 1-2 of 5" in first

    terminal.type(" ")
    second = await terminal.wait_until(
        lambda s: "posts 3-4 of 5" in s and s.count(PROMPT) >= 1 and "plain words only" in s,
        "the second page",
    )
    assert "Hello bold world" in second and "Second para" in second
    assert "First post" not in second

    terminal.type("j")
    last = await terminal.wait_until(
        lambda s: re.search(r"EXIT=\d", s) is not None, "the command's end"
    )
    assert "First post" in last and "First words" in last
    assert "(the end of the blog)" in last and "EXIT=0" in last
    for xml in ("<entry", "<item", "xmlns", "<p>", "<b>", "</"):
        assert xml not in last
    # Page order: newest first, each page after the one before.
    order = [last.index(title) for title in ("Newest post", "Signed", "Markup", "First post")]
    assert order == sorted(order)


async def test_quitting_the_pager_and_a_sync_progress_bar(
    terminal: Terminal, roostd: Roostd, roost_client: RoostClient, xmpp_server: XmppServer
) -> None:
    blog = await make_blog(xmpp_server, roost_client)
    roost = " ".join(shlex.quote(part) for part in roost_command())
    bus = shlex.quote(roostd.bus_address)
    terminal.type(f"{roost} --bus-address {bus} blog -p {blog.writer} --max 1; echo EXIT=$?")
    terminal.tmux("send-keys", "-t", "cli", "Enter")
    await terminal.wait_until(lambda s: PROMPT in s, "the first page")
    terminal.type("q")
    quit_ = await terminal.wait_until(
        lambda s: re.search(r"EXIT=\d", s) is not None, "the command's end"
    )
    assert "Newest post" in quit_ and "Signed" not in quit_ and "EXIT=0" in quit_

    terminal.type(
        f"{roost} --bus-address {bus} cache sync - {MICROBLOG} -p {blog.writer}; echo SYNC=$?",
        enter=True,
    )
    synced = await terminal.wait_until(
        lambda s: re.search(r"SYNC=\d", s) is not None, "the sync's end"
    )
    assert "SYNC=0" in synced and f"syncing {MICROBLOG}" in synced
    assert "5/5" in synced and "completed" in synced
