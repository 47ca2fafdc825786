"""roostd runs on the C library's allocator, in the process that was started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.dbus import RoostdLauncher

pytestmark = pytest.mark.dbus


def environment_of(pid: int) -> dict[str, str]:
    """A running process's environment, from /proc."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw if entry)
    return {key: value for key, _, value in pairs}


def test_roostd_starts_itself_again_on_the_c_allocator(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    # The process the launcher started owns the name (started again in place, not as a
    # child), with its arguments, and with the allocator that gives memory back.
    assert daemon.process.poll() is None
    assert environment_of(daemon.process.pid).get("PYTHONMALLOC") == "malloc"
    cmdline = Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes().split(b"\0")
    assert daemon.bus_address.encode() in cmdline
    assert daemon.terminate() == 0


def test_an_allocator_already_named_is_kept(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start(env={"PYTHONMALLOC": "pymalloc"})
    assert environment_of(daemon.process.pid).get("PYTHONMALLOC") == "pymalloc"
    assert daemon.terminate() == 0
