"""Files Roost writes are its user's alone: a real daemon run, then ``stat``.

The database holds account passwords, so it, its WAL and shared-memory files, the
leases file beside it and the backup copies made before a migration are 0600, and the
directory Roost creates for them 0700, whatever the umask (the daemon is started with
umask 0, which would leave anything not created with an explicit mode open to all). The
service files ``roost install-user-services`` writes hold no secret but tell the user's
bus and systemd what to run: nobody else may write them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import Variant

from roost.bridge.client import RoostClient
from tests.cli.conftest import COMMAND_TIMEOUT, cli_env, roost_command
from tests.fixtures.crash_migrations import prepare_old_database
from tests.fixtures.dbus import Roostd, RoostdLauncher

pytestmark = pytest.mark.dbus


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block (and the processes it starts) under ``mask``."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(paths: list[Path], expected: int) -> None:
    """Every path exists with exactly ``expected`` permissions."""
    found = {str(path.name): oct(mode(path)) for path in paths}
    assert found == {str(path.name): oct(expected) for path in paths}


async def write_through(daemon: Roostd) -> None:
    """Create a profile (its lease is taken) and store values, so that the WAL grows."""
    client = await RoostClient.connect(daemon.bus_address)
    try:
        await client.create_profile("files", "files@localhost", "files-secret", {"tls": "none"})
        for index in range(20):
            await client.set_value("files", "ns", f"k{index}", Variant("s", "x" * 1000))
    finally:
        client.close()


async def test_database_wal_shm_leases_and_directory_are_private(
    roostd_launcher: RoostdLauncher,
) -> None:
    with umask(0):
        daemon = roostd_launcher.start()
    database = daemon.database
    await write_through(daemon)
    running = [
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
        database.with_name(database.name + ".leases"),
    ]
    assert_private(running, 0o600)
    assert mode(database.parent) == 0o700
    assert daemon.terminate() == 0
    assert_private([p for p in running if p.exists()], 0o600)
    assert database in running and database.exists()


async def test_backup_before_a_migration_is_private(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    database = folder / "roost.sqlite"
    with umask(0):
        await prepare_old_database(f"sqlite:///{database}", items=20)
        # A database made by someone else's tool, open to all: Roost closes it.
        database.chmod(0o666)
        daemon = roostd_launcher.start(database=database)
    backups = sorted(folder.glob("roost.sqlite.bak-*"))
    assert len(backups) == 1, sorted(p.name for p in folder.iterdir())
    assert_private([database, *backups], 0o600)
    assert daemon.terminate() == 0


def test_installed_service_files_writable_by_their_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    environment = {k: v for k, v in cli_env(home).items() if not k.startswith("XDG_")}
    done = subprocess.run(
        [*roost_command(), "install-user-services"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=COMMAND_TIMEOUT,
        umask=0,
    )
    assert done.returncode == 0, done.stderr
    written = [
        home / ".local/share/dbus-1/services/org.roost.Backend1.service",
        home / ".config/systemd/user/roostd.service",
    ]
    assert_private(written, 0o644)
    assert not list(written[1].parent.glob("*.tmp"))
