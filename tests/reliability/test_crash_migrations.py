"""``kill -9`` of roostd while it upgrades an older database at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.crash import CrashRig
from tests.fixtures.crash_migrations import migration_round, prepare_old_database
from tests.fixtures.dbus import PrivateBus

# Each test migrates a database made at an older revision from nothing.
pytestmark = [pytest.mark.dbus, pytest.mark.empty_database]

# Enough items that the backup copy takes a while (about 20 MB).
SEED_ITEMS = 40_000


async def killed_while_migrating(tmp_path: Path, bus: PrivateBus, url: str, point: str) -> None:
    rig = CrashRig(tmp_path / "rig", bus.address, url)
    try:
        await prepare_old_database(url, SEED_ITEMS)
        outcome = await migration_round(rig, point, SEED_ITEMS)
    finally:
        rig.stop_all()
    assert "not reached" not in outcome.point
    assert outcome.checks
    assert outcome.lost == []
    assert outcome.problems == []


@pytest.mark.parametrize("point", ["upgrade", "fulltext"])
async def test_a_migration_killed_midway_is_finished_by_the_next_start(
    tmp_path: Path, test_bus: PrivateBus, database_url: str, point: str
) -> None:
    await killed_while_migrating(tmp_path, test_bus, database_url, point)


async def test_a_kill_while_the_backup_is_written_leaves_no_partial_backup(
    tmp_path: Path, test_bus: PrivateBus, sqlite_url: str
) -> None:
    # Only an SQLite file is copied before an upgrade (a server's backups are its
    # operator's).
    await killed_while_migrating(tmp_path, test_bus, sqlite_url, "backup")
