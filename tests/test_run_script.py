"""``make run``'s script, as a person runs it without a session bus: a private bus is
started (also when the runtime directory named is not there), its address printed, the
daemon owns its name on it, and the bus stops with the daemon."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "run-daemon"
VENV = Path(sys.executable).parent.parent
# Generous: the daemon starts itself again once, on a loaded machine.
READY_SECONDS = 60.0
ADDRESS_LINE = "Started a private session bus: DBUS_SESSION_BUS_ADDRESS="

pytestmark = pytest.mark.slow


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: a socket's path must fit in 108 bytes. A bus a
    failing test left there is stopped afterwards (it runs in a session of its own)."""
    with tempfile.TemporaryDirectory(prefix="rd-") as name:
        yield Path(name)
        subprocess.run(["pkill", "-f", f"unix:path={name}/"], check=False)


def _environment(home: Path, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"))
    env.update(changes)
    return env


def _lines(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines as they come, and the thread that reads them (it ends
    at the end of the output)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _owned_on(address: str) -> bool:
    """Whether a bus answers at ``address`` and Roost's name is owned on it."""
    asked = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner",
            "string:org.roost.Backend1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return asked.returncode == 0


def test_without_a_session_bus_a_private_one_lives_as_long_as_the_daemon(
    short_tmp: Path,
) -> None:
    env = _environment(short_tmp, XDG_RUNTIME_DIR=str(short_tmp / "gone"), TMPDIR=str(short_tmp))
    daemon = subprocess.Popen(
        [str(SCRIPT), str(VENV)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert daemon.stdout is not None
    lines, reader = _lines(daemon.stdout)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not any(" ready" in line and "roostd" in line for line in seen):
            try:
                seen.append(lines.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            if not reader.is_alive() and lines.empty():
                pytest.fail("the script ended before roostd was ready:\n" + "".join(seen))
            if time.monotonic() > deadline:
                pytest.fail("roostd was not ready in time:\n" + "".join(seen))
        address = next(line for line in seen if line.startswith(ADDRESS_LINE))
        address = address[len(ADDRESS_LINE) :].strip()
        # The runtime directory named is not there: the socket went to the temporary one.
        assert address.startswith(f"unix:path={short_tmp}/roost-session-bus-"), address
        assert _owned_on(address), "the daemon does not own its name on the private bus"
        # Ctrl-C: the signal goes to the whole foreground group.
        os.killpg(daemon.pid, signal.SIGINT)
        daemon.wait(timeout=READY_SECONDS)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        reader.join(timeout=READY_SECONDS)
        daemon.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    assert any("roost.daemon: stopped" in line for line in seen), "".join(seen)
    # The bus is gone with the daemon: nothing answers at its address any more.
    gone = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames",
        ],
        capture_output=True,
        timeout=30,
    )
    assert gone.returncode != 0, "the private bus was left running"


def test_a_private_bus_that_cannot_start_is_said_so(short_tmp: Path) -> None:
    env = _environment(short_tmp, TMPDIR=str(short_tmp / "not-there"))
    run = subprocess.run(
        [str(SCRIPT), str(VENV)], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 1
    assert "could not start a private session bus" in run.stderr
    assert "Started a private session bus" not in run.stdout
