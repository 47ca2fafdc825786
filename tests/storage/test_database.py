"""The Database facade: opening, URL resolution, the stores it carries, closing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from roost.storage import (
    Database,
    NodeStore,
    ParamStore,
    ProfileStore,
    ValueStore,
)


@pytest.mark.empty_database
async def test_open_creates_the_database_and_carries_every_store(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    try:
        assert db.migration.action == "created"
        assert db.url.drivername == "sqlite+aiosqlite"
        assert isinstance(db.profiles, ProfileStore)
        assert isinstance(db.params, ParamStore)
        assert isinstance(db.values, ValueStore)
        assert isinstance(db.nodes, NodeStore)
        assert type(db.items).__name__ == "ItemStore"
        assert type(db.search).__name__ == "SearchStore"
        await db.profiles.create_profile("p", "p@example.org", "x", {})
    finally:
        await db.close()
    async with await Database.open(sqlite_url) as again:
        assert again.migration.action == "current"
        assert [p.name for p in await again.profiles.list_profiles()] == ["p"]


async def test_open_takes_a_url_object_and_a_plain_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "plain.sqlite"
    async with await Database.open(make_url(f"sqlite:///{path}")) as db:
        assert db.url.drivername == "sqlite+aiosqlite"
        assert Path(db.url.database or "") == path
    assert path.exists()


async def test_open_without_url_uses_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "from-env.sqlite"
    monkeypatch.setenv("ROOST_DATABASE_URL", f"sqlite:///{path}")
    async with await Database.open() as db:
        assert Path(db.url.database or "") == path
        await db.params.set_param(None, "c", "n", "v")
    assert path.exists()


async def test_stores_share_the_database(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as first, await Database.open(sqlite_url) as second:
        await first.profiles.create_profile("shared", "s@example.org", "x", {})
        assert (await second.profiles.get_profile("shared")).jid == "s@example.org"


async def test_transactions_are_named_in_the_debug_log(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Database.open(sqlite_url) as db:
        with caplog.at_level(logging.DEBUG, logger="roost.storage"):
            await db.profiles.list_profiles()
            with pytest.raises(LookupError):
                await db.profiles.get_profile("nobody")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("roost.storage")]
    assert any(m.startswith("transaction list_profiles took") for m in messages)
    assert any(m.startswith("transaction get_profile failed") for m in messages)


async def test_closed_database_releases_its_connections(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    await db.profiles.list_profiles()
    await db.close()
    assert db.engine.sync_engine.pool.checkedout() == 0


async def test_two_first_opens_of_one_file_both_succeed(sqlite_url: str) -> None:
    # Both see an empty file; the migration's write lock makes the second find it at
    # head instead of creating every table a second time.
    first, second = await asyncio.gather(Database.open(sqlite_url), Database.open(sqlite_url))
    try:
        await first.profiles.create_profile("p", "p@example.org", "x", {})
        assert [p.name for p in await second.profiles.list_profiles()] == ["p"]
        async with second.engine.connect() as conn:
            versions = (await conn.exec_driver_sql("SELECT * FROM alembic_version")).all()
        assert len(versions) == 1
    finally:
        await first.close()
        await second.close()
