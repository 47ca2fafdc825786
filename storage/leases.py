"""Profile leases: which daemon serves which profile of a database shared by several.

A daemon keeps copies of a profile's rows in memory (recent answers, values, the
roster, which nodes are current), which stay right only while no other daemon writes
that profile's rows. So a daemon serves a profile only under its *lease*: it takes the
lease the first time it acts for the profile and keeps it until the profile is deleted
or the daemon stops; a second daemon asking for the same lease is refused with
:class:`LeaseHeld`, which says who holds it.

Each database engine picks its kind (:meth:`DatabaseEngine.open_leases
<roost.storage.engines.base.DatabaseEngine.open_leases>`):

- :class:`~roost.storage.advisory_leases.AdvisoryLeases` (PostgreSQL): a session-level
  advisory lock per profile, on one connection of its own kept open for the daemon's
  life. The lock lives with that connection: if the connection dies (a server restart,
  an administrator ending the session), every lease is gone at once. That is logged as
  an error, and the leases are taken again on a new connection as soon as the server
  lets one in; a lease another daemon took in between is lost for good, logged, and
  reported to :attr:`ProfileLeases.on_lost`.
- :class:`FileLeases` (an SQLite file): a byte-range lock per profile on a lock file
  beside the database (``<database>.leases``, mode 0600). Open-file-description locks
  (``F_OFD_SETLK``) are used where the system has them, so that two daemons in one
  process exclude each other too; the kernel drops them when the daemon exits, however
  it exits.
- :class:`LocalLeases` (an in-memory SQLite database): nothing else can open the
  database, so every lease is granted.

Leases are advisory: they bind daemons that take them, which every Roost daemon does.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from roost.storage.errors import StorageError

#: Bytes of the lock file per profile: the lock is on the first, the holder's name fills
#: the rest.
SLOT_BYTES = 128
#: ``struct flock`` as the C library lays it out (``off_t`` 64 bits wide); ``0q``
#: pads the end to the structure's alignment.
_FLOCK = "hhqqi0q"


def holder_identity() -> str:
    """How this process names itself to other daemons: ``roostd pid N on HOST``."""
    return f"roostd pid {os.getpid()} on {socket.gethostname()}"


class LeaseHeld(StorageError):
    """Another daemon holds the lease of a profile.

    Attributes:
        profile: the profile's name.
        holder: who holds the lease, for a person (``roostd pid 1234 on host``, and
            where the database knows it, its session and address).
    """

    def __init__(self, profile: str, holder: str) -> None:
        self.profile = profile
        self.holder = holder
        super().__init__(f"the lease of profile {profile!r} is held by {holder}")


class ProfileLeases(ABC):
    """The leases one daemon holds on one database.

    Attributes:
        held: the ids of the profiles whose lease this daemon holds.
        on_lost: called with a profile's id and name when its lease was lost for good
            (the connection holding it died and another daemon took it meanwhile).
        on_taken_again: called with a profile's id and name when its lease was taken
            again after the connection holding it died.
    """

    def __init__(self) -> None:
        self.held: set[int] = set()
        self.on_lost: list[Callable[[int, str], None]] = []
        self.on_taken_again: list[Callable[[int, str], None]] = []
        self._names: dict[int, str] = {}

    @abstractmethod
    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """Take the lease of a profile (nothing happens when it is held already).

        Raises:
            LeaseHeld: another daemon holds it.
        """

    @abstractmethod
    async def release(self, profile_id: int) -> None:
        """Give the lease of a profile back (nothing happens when it is not held)."""

    @abstractmethod
    async def close(self) -> None:
        """Give every lease back and let go of what holds them."""

    def _granted(self, profile_id: int, profile_name: str) -> None:
        self.held.add(profile_id)
        self._names[profile_id] = profile_name

    def _dropped(self, profile_id: int) -> None:
        self.held.discard(profile_id)
        self._names.pop(profile_id, None)

    def _lost(self, profile_id: int) -> None:
        name = self._names.get(profile_id, str(profile_id))
        self._dropped(profile_id)
        for callback in self.on_lost:
            callback(profile_id, name)


class LocalLeases(ProfileLeases):
    """Leases of a database no other daemon can open (in memory): always granted."""

    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """See :meth:`ProfileLeases.acquire`."""
        self._granted(profile_id, profile_name)

    async def release(self, profile_id: int) -> None:
        """See :meth:`ProfileLeases.release`."""
        self._dropped(profile_id)

    async def close(self) -> None:
        """See :meth:`ProfileLeases.close`."""
        self.held.clear()
        self._names.clear()


class FileLeases(ProfileLeases):
    """Byte-range locks on a lock file beside an SQLite database (see the module).

    The lock file holds, for each profile, a slot of :data:`SLOT_BYTES` at
    ``profile_id * SLOT_BYTES``: the lease is a write lock on its first byte, and its
    holder writes its name into it, for the refusal another daemon gets. The file is
    opened at the first lease and closed by :meth:`close`, which drops every lock.
    Without open-file-description locks (not Linux), POSIX record locks are used: they
    belong to the process, so two daemons in one process would not exclude each other.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            self._fd = fd
        return self._fd

    @staticmethod
    def _lock(fd: int, offset: int, lock_type: int) -> bool:
        """Set (or clear) the lock on the byte at ``offset``; False when another holds it."""
        try:
            if hasattr(fcntl, "F_OFD_SETLK"):
                # l_pid must be 0 for an open-file-description lock.
                flock = struct.pack(_FLOCK, lock_type, os.SEEK_SET, offset, 1, 0)
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
            else:
                mode = fcntl.LOCK_UN if lock_type == fcntl.F_UNLCK else fcntl.LOCK_EX
                fcntl.lockf(fd, mode | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except BlockingIOError:
            return False
        except PermissionError:  # EACCES: some systems' word for a lock held elsewhere
            return False
        return True

    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """See :meth:`ProfileLeases.acquire`."""
        if profile_id in self.held:
            return
        fd = self._file()
        offset = profile_id * SLOT_BYTES
        if not self._lock(fd, offset, fcntl.F_WRLCK):
            raise LeaseHeld(profile_name, self._holder(fd, offset))
        name = holder_identity().encode()[: SLOT_BYTES - 1]
        os.pwrite(fd, name.ljust(SLOT_BYTES, b"\0"), offset)
        self._granted(profile_id, profile_name)

    @staticmethod
    def _holder(fd: int, offset: int) -> str:
        written = os.pread(fd, SLOT_BYTES, offset).split(b"\0", 1)[0]
        # Empty while the holder has locked the slot but not yet written its name.
        return written.decode(errors="replace") or "another Roost daemon"

    async def release(self, profile_id: int) -> None:
        """See :meth:`ProfileLeases.release`."""
        if profile_id not in self.held or self._fd is None:
            return
        offset = profile_id * SLOT_BYTES
        os.pwrite(self._fd, bytes(SLOT_BYTES), offset)
        self._lock(self._fd, offset, fcntl.F_UNLCK)
        self._dropped(profile_id)

    async def close(self) -> None:
        """See :meth:`ProfileLeases.close`: closing the file drops every lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            for profile_id in self.held:
                os.pwrite(fd, bytes(SLOT_BYTES), profile_id * SLOT_BYTES)
            os.close(fd)
        self.held.clear()
        self._names.clear()
