"""The throwaway PostgreSQL cluster the tests run on, and the per-test databases."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from roost.storage import Database
from roost.storage.engine import resolve_database_url
from roost.storage.models import Base
from tests.fixtures import postgres as postgres_fixtures
from tests.fixtures.postgres import OS_USER, PG_MAJOR, PostgresServer, running_cluster


def _engine(url: str) -> AsyncEngine:
    # NullPool: nothing stays connected to a database the fixture is about to drop.
    return create_async_engine(resolve_database_url(url), poolclass=NullPool)


@pytest.fixture
async def engine(postgresql_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database."""
    engine = _engine(postgresql_url)
    yield engine
    await engine.dispose()


async def _scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql))).scalar()


async def _tables(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())


async def test_cluster_is_postgresql_15(engine: AsyncEngine) -> None:
    version = await _scalar(engine, "SELECT version()")
    assert isinstance(version, str)
    assert version.startswith(f"PostgreSQL {PG_MAJOR}."), version
    number = await _scalar(engine, "SHOW server_version_num")
    assert isinstance(number, str)
    assert int(number) // 10000 == PG_MAJOR


async def test_url_is_loopback_tcp_as_roost_takes_it(
    postgres_server: PostgresServer, postgresql_url: str, engine: AsyncEngine
) -> None:
    url = resolve_database_url(postgresql_url)
    assert postgresql_url.startswith("postgresql://")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port) == ("127.0.0.1", postgres_server.port)
    assert await _scalar(engine, "SELECT host(inet_server_addr())") == "127.0.0.1"
    assert await _scalar(engine, "SELECT current_database()") == url.database


async def test_unix_socket_in_the_cluster_directory_answers(
    postgres_server: PostgresServer, postgresql_url: str
) -> None:
    database = make_url(postgresql_url).database
    assert database is not None
    url = sa.URL.create(
        "postgresql+asyncpg",
        username=postgres_server.user,
        port=postgres_server.port,
        database=database,
        query={"host": str(postgres_server.socket_dir)},
    )
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        # No server address: the session came over the socket, not TCP.
        assert await _scalar(engine, "SELECT inet_server_addr()") is None
        assert await _scalar(engine, "SELECT current_database()") == database
    finally:
        await engine.dispose()


async def test_each_database_is_fresh_and_its_own(
    postgres_server: PostgresServer, postgresql_url: str, engine: AsyncEngine
) -> None:
    schema = sorted(Base.metadata.tables)
    with postgres_server.database() as other_url:
        assert make_url(other_url).database != make_url(postgresql_url).database
        other = _engine(other_url)
        try:
            # The test's database is at the current schema, the other (template0's copy)
            # empty; neither sees a table made in the other.
            assert set(schema) <= set(await _tables(engine))
            assert await _scalar(engine, "SELECT count(*) FROM profiles") == 0
            assert await _tables(other) == []
            async with engine.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE only_here (id integer PRIMARY KEY)"))
            assert "only_here" in await _tables(engine)
            assert await _tables(other) == []
        finally:
            await other.dispose()
        name = make_url(other_url).database
        exists = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        assert postgres_server.psql(exists) == "1"
    assert postgres_server.psql(exists) == "0"


async def test_durability_is_off_and_connections_are_many(engine: AsyncEngine) -> None:
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        assert await _scalar(engine, f"SHOW {setting}") == "off", setting
    max_connections = await _scalar(engine, "SHOW max_connections")
    assert isinstance(max_connections, str)
    assert int(max_connections) >= 300


async def test_plain_sqlalchemy_engine_creates_and_reads_a_table(postgresql_url: str) -> None:
    url = make_url(postgresql_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, poolclass=NullPool)
    metadata = sa.MetaData()
    notes = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(notes.insert(), [{"body": "première"}, {"body": "second"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(notes.c.body).order_by(notes.c.id))).all()
        assert [row.body for row in rows] == ["première", "second"]
    finally:
        await engine.dispose()


def test_cluster_runs_as_its_own_user(postgres_server: PostgresServer) -> None:
    expected = OS_USER if os.geteuid() == 0 else getpass.getuser()
    assert postgres_server.data_dir.owner() == expected
    data_directory = postgres_server.psql("SHOW data_directory")
    assert data_directory == str(postgres_server.data_dir)


async def test_database_url_opens_either_database_at_the_current_schema(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    async with await Database.open(database_url) as db:
        assert db.migration.action == "current"
        assert await db.profiles.list_profiles() == []
        assert db.engine.dialect.name == request.node.callspec.id


async def test_a_tests_writes_stay_in_its_own_database(
    postgresql_url: str, postgres_server: PostgresServer, migrated_postgres_template: str
) -> None:
    async with await Database.open(postgresql_url) as db:
        await db.profiles.create_profile("mine", "mine@example.org", "x", {})
    template = _engine(postgres_server.url(migrated_postgres_template))
    try:
        assert await _scalar(template, "SELECT count(*) FROM profiles") == 0
    finally:
        await template.dispose()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.postgresql
def test_a_cluster_leaves_nothing_behind() -> None:
    with running_cluster() as server:
        assert _accepts(server.port)
        assert server.psql("SELECT 1") == "1"
        directory, port = server.directory, server.port
    assert not server.running
    assert not _accepts(port)
    assert not directory.exists()


def test_missing_postgresql_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_fixtures, "postgres_bindir", lambda: None)
    with (
        pytest.raises(pytest.fail.Exception, match=r"make deps-test` installs postgresql-15"),
        running_cluster(),
    ):
        pass
