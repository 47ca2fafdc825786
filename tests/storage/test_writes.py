"""Write transactions run whole in one call; on an SQLite file, at once on the event
loop's thread, never waiting there for another process's lock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from roost.storage import Database, TypedValue
from roost.storage.writes import SqliteFileWrites


class _Heard(logging.Handler):
    """Sets an event when a record with ``words`` in its message is logged."""

    def __init__(self, words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words = words
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


async def test_a_write_meeting_another_process_s_lock_waits_for_it_off_the_loop(
    sqlite_url: str,
) -> None:
    database = await Database.open(sqlite_url)
    log = logging.getLogger("roost.storage.writes")
    heard = _Heard("busy")
    log.addHandler(heard)
    level = log.level
    log.setLevel(logging.DEBUG)
    other = sqlite3.connect(str(make_url(sqlite_url).database), isolation_level=None)
    try:
        assert isinstance(database.writes, SqliteFileWrites)
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        other.execute("BEGIN IMMEDIATE")  # another process writes
        write = asyncio.create_task(database.values.set_value("p", "ns", "k", "i", 1))
        await asyncio.wait_for(heard.event.wait(), 60)
        # The loop runs on meanwhile: reads are answered while the write waits.
        assert await database.values.get_values("p", "ns", []) == {}
        assert not write.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(write, 60)
        assert await database.values.get_values("p", "ns", []) == {"k": TypedValue("i", 1)}
    finally:
        other.close()
        log.removeHandler(heard)
        log.setLevel(level)
        await database.close()


async def test_the_write_ahead_log_stays_bounded(sqlite_url: str) -> None:
    """The loop's connection checkpoints as SQLite's default does: the log starts again
    from its beginning instead of growing with every write."""
    database = await Database.open(sqlite_url)
    try:
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        for n in range(1500):
            await database.values.set_value("p", "ns", f"k{n}", "s", "words " * 50)
        assert _size(Path(f"{make_url(sqlite_url).database}-wal")) < 6 * 2**20
    finally:
        await database.close()


def _size(path: Path) -> int:
    return path.stat().st_size
