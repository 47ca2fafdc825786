"""Profile leases on both databases: two Database objects stand for two daemons."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.storage import Database
from roost.storage.advisory_leases import LEASE_LOCK_CLASS
from roost.storage.engine import create_engine
from roost.storage.leases import LeaseHeld
from tests.fixtures.postgres import PostgresServer

# Generous on a loaded two-core machine; each wait ends at its event, long before.
EVENT_TIMEOUT = 60.0


@pytest.fixture
async def two(database_url: str) -> AsyncIterator[tuple[Database, Database, int, int]]:
    """Two daemons' databases on one database, with profiles alice and bob (their ids)."""
    first = await Database.open(database_url)
    second = await Database.open(database_url)
    alice = await first.profiles.create_profile("alice", "alice@example.org", "x", {})
    bob = await first.profiles.create_profile("bob", "bob@example.org", "x", {})
    yield first, second, alice.id, bob.id
    await second.close()
    await first.close()


async def test_a_held_lease_is_refused_naming_its_holder(
    two: tuple[Database, Database, int, int],
) -> None:
    first, second, alice, _bob = two
    await first.leases.acquire(alice, "alice")
    await first.leases.acquire(alice, "alice")  # held already: nothing to do
    with pytest.raises(LeaseHeld) as refused:
        await second.leases.acquire(alice, "alice")
    assert refused.value.profile == "alice"
    assert f"roostd pid {os.getpid()} on {socket.gethostname()}" in refused.value.holder
    if first.shares_database:
        # The database's view of the holder: its session, and where it connects from.
        assert "database session" in refused.value.holder
        assert "127.0.0.1" in refused.value.holder
    assert first.leases.held == {alice}
    assert second.leases.held == set()


async def test_release_and_close_free_a_lease(two: tuple[Database, Database, int, int]) -> None:
    first, second, alice, _bob = two
    await first.leases.acquire(alice, "alice")
    await first.leases.release(alice)
    assert first.leases.held == set()
    await second.leases.acquire(alice, "alice")
    with pytest.raises(LeaseHeld):
        await first.leases.acquire(alice, "alice")
    await second.leases.close()
    await first.leases.acquire(alice, "alice")
    assert first.leases.held == {alice}


async def test_two_holders_each_with_a_profile(two: tuple[Database, Database, int, int]) -> None:
    first, second, alice, bob = two
    await first.leases.acquire(alice, "alice")
    await second.leases.acquire(bob, "bob")
    with pytest.raises(LeaseHeld, match="'bob'"):
        await first.leases.acquire(bob, "bob")
    with pytest.raises(LeaseHeld, match="'alice'"):
        await second.leases.acquire(alice, "alice")
    assert (first.leases.held, second.leases.held) == ({alice}, {bob})


async def test_a_closed_database_gives_its_leases_back(database_url: str) -> None:
    first = await Database.open(database_url)
    alice = await first.profiles.create_profile("alice", "alice@example.org", "x", {})
    await first.leases.acquire(alice.id, "alice")
    await first.close()
    async with await Database.open(database_url) as second:
        await second.leases.acquire(alice.id, "alice")
        assert second.leases.held == {alice.id}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_lock_file_is_the_owners_alone(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as db:
        alice = await db.profiles.create_profile("alice", "alice@example.org", "x", {})
        await db.leases.acquire(alice.id, "alice")
        database = make_url(sqlite_url).database
        assert database is not None
        assert _mode(Path(f"{database}.leases")) == 0o600


async def test_an_in_memory_database_grants_every_lease() -> None:
    async with await Database.open("sqlite+aiosqlite:///:memory:") as db:
        await db.leases.acquire(7, "alice")
        assert db.leases.held == {7}
        await db.leases.release(7)
        assert db.leases.held == set()


# -- PostgreSQL: the connection holding the leases ---------------------------------------


async def _lease_backend_pid(url: str, profile_id: int) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            pid = await conn.scalar(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid::bigint = :cls AND objid::bigint = :id"
                ),
                {"cls": LEASE_LOCK_CLASS, "id": profile_id},
            )
    finally:
        await engine.dispose()
    assert isinstance(pid, int)
    return pid


async def _until_unlocked(conn: AsyncConnection, profile_id: int) -> None:
    """Wait until nobody holds the lease: take it on ``conn`` (the server answers once
    the lock is free), then give it back."""
    lease = {"cls": LEASE_LOCK_CLASS, "id": profile_id}
    await conn.execute(text("SELECT pg_advisory_lock(:cls, :id)"), lease)
    await conn.execute(text("SELECT pg_advisory_unlock(:cls, :id)"), lease)


@asynccontextmanager
async def _watcher(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection of the test's own, outside any daemon's."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
    finally:
        await engine.dispose()


async def _terminate(server: PostgresServer, pid: int) -> None:
    await asyncio.to_thread(server.psql, f"SELECT pg_terminate_backend({pid})")


@asynccontextmanager
async def holder_cut_off(server: PostgresServer, url: str, profile_id: int) -> AsyncIterator[None]:
    """End the session holding a profile's lease and, for the ``with`` block, keep its
    daemon from connecting again (no new session may start on the database), so that
    another can take the lease first; the block starts once the lease is free."""
    database = make_url(url).database
    pid = await _lease_backend_pid(url, profile_id)
    async with _watcher(url) as watcher:
        await asyncio.to_thread(server.psql, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            await _terminate(server, pid)
            await asyncio.wait_for(_until_unlocked(watcher, profile_id), EVENT_TIMEOUT)
            yield
        finally:
            await asyncio.to_thread(
                server.psql, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'
            )


async def test_an_ended_session_frees_its_leases_and_they_are_taken_again(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    async with (
        await Database.open(postgresql_url) as first,
        await Database.open(postgresql_url) as second,
    ):
        alice = await first.profiles.create_profile("alice", "alice@example.org", "x", {})
        again = asyncio.Event()
        first.leases.on_taken_again.append(lambda _id, _name: again.set())
        await first.leases.acquire(alice.id, "alice")
        old_pid = await _lease_backend_pid(postgresql_url, alice.id)
        await _terminate(postgres_server, old_pid)
        # The server drops the lock with the session; the holder hears of it and, the
        # lease being free, takes it again on a new connection.
        await asyncio.wait_for(again.wait(), EVENT_TIMEOUT)
        assert first.leases.held == {alice.id}
        assert await _lease_backend_pid(postgresql_url, alice.id) != old_pid
        with pytest.raises(LeaseHeld):
            await second.leases.acquire(alice.id, "alice")


async def test_a_lease_taken_while_its_holder_was_cut_off_is_lost(
    postgresql_url: str, postgres_server: PostgresServer
) -> None:
    async with (
        await Database.open(postgresql_url) as first,
        await Database.open(postgresql_url) as second,
    ):
        alice = await first.profiles.create_profile("alice", "alice@example.org", "x", {})
        bob = await first.profiles.create_profile("bob", "bob@example.org", "x", {})
        lost: list[tuple[int, str]] = []
        lost_event = asyncio.Event()

        def on_lost(profile_id: int, name: str) -> None:
            lost.append((profile_id, name))
            lost_event.set()

        first.leases.on_lost.append(on_lost)
        await first.leases.acquire(alice.id, "alice")
        await second.leases.acquire(bob.id, "bob")  # the second's connection is up
        async with holder_cut_off(postgres_server, postgresql_url, alice.id):
            await second.leases.acquire(alice.id, "alice")
        await asyncio.wait_for(lost_event.wait(), EVENT_TIMEOUT)
        assert lost == [(alice.id, "alice")]
        assert first.leases.held == set()
        assert second.leases.held == {alice.id, bob.id}
