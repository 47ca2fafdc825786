"""roostd runs on the C library's allocator, in the process that was started, with a
fixed mmap threshold."""

from __future__ import annotations

import os
import subprocess
import sys
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


# Run in a process of its own: the threshold is the whole process's. It frees one large
# block, which on glibc's default raises the threshold past the next one, then counts the
# mapped blocks that the next large block adds (glibc's mallinfo2).
_NEXT_BLOCK_MAPPED = """
import ctypes, sys
from roost.service.launch import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
freed = bytearray(4 * 1024 * 1024)
del freed
before = mallinfo2().hblks
read_buffer = bytearray(256 * 1024)  # asyncio's socket read size
print(mallinfo2().hblks - before)
"""


def next_large_block_mapped(mode: str) -> bool:
    """Whether a 256 KiB block made after a 4 MiB one was freed got its own mapping."""
    out = subprocess.run(
        [sys.executable, "-c", _NEXT_BLOCK_MAPPED, mode],
        env={**os.environ, "PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return int(out) == 1


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc's allocator only")
def test_a_large_block_freed_does_not_move_the_mmap_threshold() -> None:
    # The default behaviour this guards against: the freed block raised the threshold,
    # so the read-sized block came from the heap (where its freed tail leaves a hole).
    assert not next_large_block_mapped("default")
    assert next_large_block_mapped("fixed")
