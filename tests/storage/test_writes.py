"""Write transactions run whole in one call; on an SQLite file, those that wait go
together in one transaction, each in a savepoint of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from roost.storage import Database, RosterEntry, RowNotFound, TypedValue
from roost.storage.write_turn import write_turn_for
from roost.storage.writes import ThreadWrites


@pytest.fixture
def commits() -> Iterator[list[Any]]:
    """Every commit any engine of this process makes while the test runs."""
    seen: list[Any] = []

    def commit(connection: Any) -> None:
        seen.append(connection)

    event.listen(Engine, "commit", commit)
    yield seen
    event.remove(Engine, "commit", commit)


async def test_writes_that_wait_are_committed_together_each_with_its_own_outcome(
    sqlite_url: str, commits: list[Any]
) -> None:
    """While the turn is taken, writes of several stores queue; they are then stored in
    one transaction, and the one that fails (an unknown profile) fails alone."""
    database = await Database.open(sqlite_url)
    try:
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        turn = write_turn_for(database.engine)
        assert turn is not None
        held, release = asyncio.Event(), asyncio.Event()

        async def hold_the_turn() -> None:
            async with turn.hold():
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_turn())
        await held.wait()
        writes = [
            asyncio.create_task(database.values.set_value("p", "ns", f"k{n}", "i", n))
            for n in range(5)
        ]
        writes.append(asyncio.create_task(database.values.set_value("nobody", "ns", "k", "i", 0)))
        writes.append(
            asyncio.create_task(database.roster.upsert_contact("p", RosterEntry("c@example.org")))
        )
        writes.append(asyncio.create_task(database.values.delete_value("p", "ns", "k0")))
        runner = database.writes
        assert isinstance(runner, ThreadWrites)

        async def all_queued() -> None:
            # Each turn of the loop lets the store calls get further; the queue has no
            # event of its own to wait for.
            while runner.waiting < len(writes):  # noqa: ASYNC110
                await asyncio.sleep(0)

        # Every write reaches the queue before the turn is given back.
        await asyncio.wait_for(all_queued(), 60)
        commits.clear()
        release.set()
        outcomes = await asyncio.wait_for(
            asyncio.gather(holder, *writes, return_exceptions=True), 60
        )
        assert isinstance(outcomes[6], RowNotFound)
        assert outcomes[8] is True  # k0, written earlier in the same transaction, deleted
        assert [o for n, o in enumerate(outcomes) if n not in (6, 8)] == [None] * 7
        assert len(commits) == 1
        assert await database.values.get_values("p", "ns", []) == {
            f"k{n}": TypedValue("i", n) for n in range(1, 5)
        }
        _, contacts = await database.roster.get_roster("p")
        assert [c.jid for c in contacts] == ["c@example.org"]
    finally:
        await database.close()


async def test_a_write_conflicting_in_a_group_runs_again_and_lands(sqlite_url: str) -> None:
    """Two first writes of the same contact at once: the second finds the row the
    first inserted."""
    database = await Database.open(sqlite_url)
    try:
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        await asyncio.gather(
            *(
                database.roster.upsert_contact("p", RosterEntry("c@example.org", f"n{n}"))
                for n in range(6)
            )
        )
        _, contacts = await database.roster.get_roster("p")
        assert len(contacts) == 1
    finally:
        await database.close()


async def test_close_lets_queued_writes_finish(database_url: str) -> None:
    database = await Database.open(database_url)
    await database.profiles.create_profile("p", "p@example.org", "x", {})
    writes = [
        asyncio.ensure_future(database.values.set_value("p", "ns", f"k{n}", "i", n))
        for n in range(20)
    ]
    await asyncio.gather(*writes)
    await database.close()
    async with await Database.open(database_url) as again:
        assert len(await again.values.get_values("p", "ns", [])) == 20
