"""The ``roostd`` command: the memory allocator first, then the daemon.

CPython's own allocator (pymalloc) takes memory from the system in arenas of 1 MiB and
gives an arena back only once every object in it is gone. A sync makes hundreds of
thousands of short-lived objects beside a few that live on, and those few keep most of
the arenas: after a sync of 100,000 items the daemon kept 43 MiB of the 55 MiB it had
taken, for good (``bench/memory.py``). With the C library's ``malloc`` for every object
(``PYTHONMALLOC=malloc``), what is freed goes back to the system a page at a time when
the heap is trimmed after the syncs (:mod:`roost.service.heap_trim`): 13 MiB kept.

The allocator is chosen when the interpreter starts, from the environment, so ``roostd``
starts itself again, once, with ``PYTHONMALLOC=malloc``, before it imports anything
heavy (the same process: ``exec``; about 30 ms). Only on glibc, whose ``malloc_trim``
the trimmer uses. ``PYTHONMALLOC`` already set, to anything (``pymalloc`` included),
is left as it is: that is also how to opt out.

Then, on glibc, the size from which a block gets a mapping of its own is fixed at
:data:`MMAP_THRESHOLD`. glibc raises that threshold each time such a block is freed, up
to 32 MiB, and asyncio reads every socket into a 256 KiB block that it then shrinks to
what arrived: once a read has filled one (a page of items from PostgreSQL does), every
later read takes 256 KiB from the heap and gives back its tail, between blocks that live
on. The heap then grows with holes that ``malloc_trim`` cannot hand back while the
daemon is busy: 26 MiB a minute under the soak on PostgreSQL, 94 to 460 MiB in ten
minutes. With the threshold fixed, such a block is mapped and unmapped, and the
resident set stays flat at the same speed (``bench/soak.py``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

ALLOCATOR_ENV = "PYTHONMALLOC"
ALLOCATOR = "malloc"
#: Blocks of at least this many bytes get a mapping of their own (glibc's default
#: starting value, kept from then on).
MMAP_THRESHOLD = 128 * 1024
# mallopt's parameter number for the threshold, from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3


def _on_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def choose_allocator() -> None:
    """Start this program again with the C library's allocator, unless the environment
    already names one or this is not glibc; returns only when it does not."""
    if ALLOCATOR_ENV in os.environ or not _on_glibc() or not sys.orig_argv:
        return
    env = dict(os.environ)
    env[ALLOCATOR_ENV] = ALLOCATOR
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        # The daemon runs on with CPython's allocator: it keeps more memory after large
        # syncs, nothing else.
        return


def glibc_function(
    name: str, argtypes: list[Any], restype: Any = ctypes.c_int
) -> Callable[..., Any] | None:
    """glibc's function ``name`` (returning ``restype``, a C ``int`` unless told) from
    this process's own symbols, or None on another C library."""
    if not _on_glibc():
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function  # type: ignore[no-any-return]


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`, so that freeing a large
    block no longer raises it; whether it was done (not on another C library)."""
    mallopt = glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def main() -> None:
    """Entry point of the ``roostd`` console script."""
    choose_allocator()
    fix_mmap_threshold()
    from roost.service.daemon import main as daemon_main

    daemon_main()
