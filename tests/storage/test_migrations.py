"""Migrations on real SQLite files: creation, upgrades with data, downgrades, drift, refusal.

The upgrade tests walk every revision of the script directory: a new revision must add
its seed to ``SEEDS`` (rows written with that revision's schema), and the tests then
check that every earlier revision's data survives the way up.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, inspect, text
from sqlalchemy.engine import Connection

from roost.storage import (
    CacheSubscriptionRecord,
    Database,
    DatabaseTooNew,
    RosterEntry,
    SubscriptionRequestRecord,
    TypedValue,
    UnmanagedDatabase,
)
from roost.storage.engine import create_engine, resolve_database_url
from roost.storage.engines import SqliteEngine, engine_for
from roost.storage.migrate import (
    HEAD_REVISION,
    backup_sqlite_database,
    include_object,
    prepare_database,
    run_alembic_downgrade,
    run_alembic_upgrade,
    script_directory,
)
from roost.storage.models import Base
from tests.fixtures.database import close_as_killed

# Every database here starts empty: these tests are about what the migrations make of it.
pytestmark = pytest.mark.empty_database

# --- data written at each revision, with the SQL of that revision's schema ----------------


def _seed_0001(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO profiles (id, name, jid, password, options, created) "
            "VALUES (101, 'seed1', 'seed1@example.org', 'pw', '{\"port\": 5222}', 1.0)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO params (profile_id, category, name, value) "
            "VALUES (101, 'general', 'theme', 'dark'), (NULL, 'general', 'lang', 'fr')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO kv_store (profile_id, namespace, key, value_type, value) "
            "VALUES (101, 'ns', 'big', 't', '18446744073709551615')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO pubsub_nodes (id, profile_id, service, name, analyser, type, "
            "subtype, sync_state, sync_state_updated, subscribed, extra) VALUES "
            "(201, 101, 'pubsub.example.org', 'blog1', 'microblog', 'blog', NULL, "
            "'completed', 5.0, TRUE, '{\"k\": 1}')"
        )
    )
    for i in range(3):
        conn.execute(
            text(
                "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, "
                "parsed, search_text, created, updated) VALUES (201, :item, '', :pos, "
                "'<item/>', '{\"title\": \"t\"}', :words, 1.0, 1.0)"
            ),
            {"item": f"seed1-{i}", "pos": i, "words": f"seedword{i} alpha"},
        )


def _seed_0002(conn: Connection) -> None:
    conn.execute(text("INSERT INTO rosters (profile_id, version) VALUES (101, 'ver-7')"))
    conn.execute(
        text(
            "INSERT INTO roster_items (profile_id, jid, name, groups, subscription, "
            "pending_out, updated) VALUES "
            "(101, 'alice@example.org', 'Alice', '[\"Friends\", \"Work\"]', 'both', FALSE, 2.0), "
            "(101, 'bob@example.org', '', '[]', 'none', TRUE, 2.0)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO subscription_requests (profile_id, jid, message, received) "
            "VALUES (101, 'carol@example.org', 'hello', 3.0)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO cache_subscriptions (profile_id, service, node, subid, created) "
            "VALUES (101, 'pubsub.example.org', 'blog1', 'sub-1', 4.0)"
        )
    )


def _seed_0003(conn: Connection) -> None:
    # Items added and removed at 0003 are counted by its triggers as they come and go.
    conn.execute(
        text(
            "INSERT INTO pubsub_nodes (id, profile_id, service, name, sync_state, "
            "sync_state_updated, subscribed, extra) VALUES "
            "(202, 101, 'pubsub.example.org', 'blog2', 'completed', 6.0, FALSE, '{}')"
        )
    )
    for i in range(3):
        conn.execute(
            text(
                "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, "
                "search_text, created, updated) VALUES (202, :item, '', :pos, '<item/>', "
                "'', 1.0, 1.0)"
            ),
            {"item": f"seed3-{i}", "pos": i},
        )
    conn.execute(text("DELETE FROM pubsub_items WHERE item_id = 'seed3-1'"))


SEEDS: dict[str, Callable[[Connection], None]] = {
    "0001": _seed_0001,
    "0002": _seed_0002,
    "0003": _seed_0003,
}


async def _check_seed_0001(db: Database) -> None:
    profile = await db.profiles.get_profile("seed1")
    assert (profile.jid, profile.password, dict(profile.options)) == (
        "seed1@example.org",
        "pw",
        {"port": 5222},
    )
    assert await db.params.get_param("seed1", "general", "theme") == "dark"
    assert await db.params.get_param(None, "general", "lang") == "fr"
    values = await db.values.get_values("seed1", "ns", [])
    assert values == {"big": TypedValue("t", 2**64 - 1)}
    node = await db.nodes.get_node("seed1", "pubsub.example.org", "blog1")
    assert node is not None
    assert (node.analyser, node.type, node.sync_state, node.subscribed) == (
        "microblog",
        "blog",
        "completed",
        True,
    )
    assert node.extra == {"k": 1}
    async with db.engine.connect() as conn:
        items = (
            await conn.execute(
                text("SELECT item_id FROM pubsub_items WHERE node_id = :n ORDER BY position"),
                {"n": node.id},
            )
        ).scalars()
        assert list(items) == ["seed1-0", "seed1-1", "seed1-2"]
    # The full-text index holds the items written at that revision.
    assert [hit.item_id for hit in await db.search.search({"fts": "seedword1"})] == ["seed1-1"]


async def _check_seed_0002(db: Database) -> None:
    assert await db.roster.get_roster("seed1") == (
        "ver-7",
        [
            RosterEntry("alice@example.org", "Alice", ("Friends", "Work"), "both", False),
            RosterEntry("bob@example.org", "", (), "none", True),
        ],
    )
    assert await db.roster.list_subscription_requests("seed1") == [
        SubscriptionRequestRecord("carol@example.org", "hello", 3.0)
    ]
    assert await db.cache_subscriptions.list_subscriptions("seed1") == [
        CacheSubscriptionRecord("seed1", "pubsub.example.org", "blog1", "sub-1", 4.0)
    ]


async def _check_seed_0003(db: Database) -> None:
    # blog1's items were written before 0003 and counted by the migration; blog2's by
    # the triggers; both go on being counted.
    for name, ids in (
        ("blog1", ["seed1-0", "seed1-1", "seed1-2"]),
        ("blog2", ["seed3-0", "seed3-2"]),
    ):
        node = await db.nodes.get_node("seed1", "pubsub.example.org", name)
        assert node is not None
        page = await db.items.get_items(node.id, max_items=1)
        assert ([r.item_id for r in page.items], page.count) == (ids[-1:], len(ids))
        assert await db.items.count_items(node.id) == len(ids)
    blog2 = await db.nodes.get_node("seed1", "pubsub.example.org", "blog2")
    assert blog2 is not None
    await db.items.delete_items(blog2.id, ["seed3-0"])
    assert await db.items.count_items(blog2.id) == 1


CHECKS = {"0001": _check_seed_0001, "0002": _check_seed_0002, "0003": _check_seed_0003}


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(script_directory().walk_revisions()))]


def _user_tables(conn: Connection) -> list[str]:
    names = inspect(conn).get_table_names()
    return sorted(
        name
        for name in names
        if name != "alembic_version" and not engine_for(conn).internal_table(name)
    )


def _row_counts(conn: Connection) -> dict[str, int]:
    return {
        table: int(conn.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar() or 0)
        for table in _user_tables(conn)
    }


def _schema(conn: Connection) -> list[tuple[str, str]]:
    if conn.dialect.name != "sqlite":
        return _described_schema(conn)
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE name != 'alembic_version' "
        "AND name NOT LIKE 'sqlite_autoindex_alembic%' ORDER BY name"
    )
    return [(name, sql) for name, sql in rows]


def _described_schema(conn: Connection) -> list[tuple[str, str]]:
    """Every table's columns, indexes and constraints as the database describes them."""
    found = inspect(conn)
    described: list[tuple[str, str]] = []
    for table in sorted(found.get_table_names()):
        if table == "alembic_version":
            continue
        parts = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"] or "", tuple(map(str, i["column_names"])), bool(i["unique"]))
                for i in found.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in found.get_unique_constraints(table)
            ),
            "foreign": sorted(
                (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in found.get_foreign_keys(table)
            ),
        }
        described.append((table, repr(parts)))
    return described


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.bak-*"))


def _version(conn: Connection) -> list[str]:
    return list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())


def test_every_revision_has_seed_data() -> None:
    assert set(SEEDS) == set(_revisions()), "add a seed (and a check) for each new revision"
    assert set(CHECKS) == set(_revisions())


async def test_new_database_is_created_at_head(database_url: str) -> None:
    url = resolve_database_url(database_url)
    engine = create_engine(url)
    try:
        outcome = await prepare_database(engine, url)
        async with engine.connect() as conn:
            version = await conn.run_sync(_version)
            tables = await conn.run_sync(_user_tables)
            sqlite = conn.dialect.name == "sqlite"
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() if sqlite else 1
    finally:
        await engine.dispose()
    head = _revisions()[-1]
    assert (outcome.action, outcome.from_revision, outcome.to_revision) == ("created", None, head)
    assert outcome.backup is None
    assert version == [head]
    assert tables == sorted(table.name for table in Base.metadata.sorted_tables)
    assert fks == 1  # switched off for the migration only


async def test_upgrade_step_by_step_keeps_every_revision_data(database_url: str) -> None:
    url = resolve_database_url(database_url)
    engine = create_engine(url)
    try:
        expected: dict[str, int] = {}
        for revision in _revisions():
            async with engine.connect() as conn:
                await conn.run_sync(run_alembic_upgrade, revision)
                counts = await conn.run_sync(_row_counts)
                # Nothing written at an earlier revision was lost by this step.
                assert {t: counts.get(t) for t in expected} == expected, revision
                await conn.run_sync(SEEDS[revision])
                await conn.commit()
                expected = await conn.run_sync(_row_counts)
                assert await conn.run_sync(_version) == [revision]
    finally:
        await engine.dispose()
    async with await Database.open(database_url) as db:
        assert db.migration.action == "current"
        for check in CHECKS.values():
            await check(db)


@pytest.mark.parametrize("start", _revisions())
async def test_start_brings_any_revision_with_data_to_head(
    database_url: str, tmp_path: Path, start: str
) -> None:
    url = resolve_database_url(database_url)
    one_file = engine_for(url).single_file
    engine = create_engine(url)
    try:
        for revision in _revisions()[: _revisions().index(start) + 1]:
            async with engine.connect() as conn:
                await conn.run_sync(run_alembic_upgrade, revision)
                await conn.run_sync(SEEDS[revision])
                await conn.commit()
    finally:
        await engine.dispose()

    async with await Database.open(database_url) as db:
        head = _revisions()[-1]
        assert db.migration.from_revision == start
        assert db.migration.to_revision == head
        if start == head:
            assert db.migration.action == "current"
            assert db.migration.backup is None
        else:
            assert db.migration.action == "upgraded"
            if one_file:
                assert db.migration.backup is not None
                assert db.migration.backup.name.startswith(f"roost.sqlite.bak-{start}-")
            else:  # a database server's backups are its operator's
                assert db.migration.backup is None
        for revision in _revisions()[: _revisions().index(start) + 1]:
            await CHECKS[revision](db)
    assert len(_backups(tmp_path)) == (0 if start == head or not one_file else 1)


async def test_downgrade_to_base_then_upgrade_round_trips(database_url: str) -> None:
    url = resolve_database_url(database_url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            schemas: dict[str, list[tuple[str, str]]] = {}
            for revision in _revisions():
                await conn.run_sync(run_alembic_upgrade, revision)
                schemas[revision] = await conn.run_sync(_schema)
                await conn.run_sync(SEEDS[revision])
                await conn.commit()
            at_head = await conn.run_sync(_schema)
            # Step down one revision at a time, so each downgrade runs on its own, with
            # every revision's data in the database.
            for below in reversed([None, *_revisions()[:-1]]):
                before = await conn.run_sync(_row_counts)
                await conn.run_sync(run_alembic_downgrade, "-1")
                if below is None:
                    assert await conn.run_sync(_schema) == []
                    assert await conn.run_sync(_version) == []
                    continue
                assert await conn.run_sync(_version) == [below]
                assert await conn.run_sync(_schema) == schemas[below]
                # The step dropped only what its revision added: the rest kept every row.
                after = await conn.run_sync(_row_counts)
                assert after == {table: before[table] for table in after}, below
            await conn.run_sync(run_alembic_upgrade, "head")
            assert await conn.run_sync(_schema) == at_head
    finally:
        await engine.dispose()


async def test_newer_database_is_refused_naming_both_revisions(database_url: str) -> None:
    url = resolve_database_url(database_url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_alembic_upgrade, "head")
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
            await conn.commit()
    finally:
        await engine.dispose()
    head = _revisions()[-1]
    with pytest.raises(DatabaseTooNew) as refused:
        await Database.open(database_url)
    assert refused.value.database_revision == "9999"
    assert refused.value.code_revision == head
    assert "9999" in str(refused.value)
    assert head in str(refused.value)


async def test_tables_without_a_revision_are_refused(sqlite_url: str) -> None:
    path = resolve_database_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE somebody_elses (x INTEGER)")
    with pytest.raises(UnmanagedDatabase, match="somebody_elses"):
        await Database.open(sqlite_url)
    with sqlite3.connect(path) as raw:
        names = [row[0] for row in raw.execute("SELECT name FROM sqlite_master")]
    assert names == ["somebody_elses"]  # refused before touching anything


async def test_models_and_migrations_never_drift(database_url: str) -> None:
    async with await Database.open(database_url) as db, db.engine.connect() as conn:

        def compare(sync_conn: Connection) -> list[object]:
            context = MigrationContext.configure(
                sync_conn, opts={"include_object": include_object, "compare_type": True}
            )
            return list(compare_metadata(context, Base.metadata))

        assert await conn.run_sync(compare) == []


def test_autogenerate_command_finds_nothing_to_do(tmp_path: Path) -> None:
    # The command a developer runs: from the migrations folder, no URL (a scratch database
    # at head). "alembic check" fails when autogenerate would write any operation.
    folder = Path(str(resources.files("roost.storage.migrations")))
    env = {k: v for k, v in os.environ.items() if k != "ROOST_DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


async def _items_with_fts(db: Database) -> int:
    node = await db.nodes.get_or_create_node(
        (await db.profiles.create_profile("p", "p@example.org", "x", {})).name,
        "pubsub.example.org",
        "blog",
    )
    async with db.engine.begin() as conn:
        for i in range(20):
            await conn.execute(
                text(
                    "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, "
                    "search_text, created, updated) VALUES (:n, :i, '', :p, '<item/>', "
                    ":w, 1.0, 1.0)"
                ),
                {"n": node.id, "i": f"i{i}", "p": i, "w": f"word{i} common"},
            )
    return node.id


async def _fts_hits(db: Database, term: str) -> int:
    async with db.engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT count(*) FROM pubsub_items_fts WHERE pubsub_items_fts MATCH :t"),
                {"t": term},
            )
        ).scalar()
    return int(count or 0)


@pytest.mark.parametrize(
    "damage",
    [
        # An index row with no item behind it.
        "INSERT INTO pubsub_items_fts(rowid, search_text) VALUES (99999, 'ghost')",
        # An item the index lost (as a crash between the two writes would leave it).
        "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, search_text) "
        "SELECT 'delete', id, search_text FROM pubsub_items WHERE item_id = 'i7'",
        # Index pages gone from the shadow table.
        "DELETE FROM pubsub_items_fts_data WHERE id > 10",
    ],
    ids=["ghost-row", "lost-row", "shadow-data"],
)
async def test_damaged_fulltext_index_is_rebuilt_at_next_open(sqlite_url: str, damage: str) -> None:
    db = await Database.open(sqlite_url)
    await _items_with_fts(db)
    assert await _fts_hits(db, "word7") == 1
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(damage)
    # Not closed cleanly: a clean close vouches for the index, and the next open would
    # trust it.
    await close_as_killed(db)

    async with await Database.open(sqlite_url) as db:
        assert db.migration.fts_rebuilt is True
        assert await _fts_hits(db, "word7") == 1
        assert await _fts_hits(db, "common") == 20
        assert await _fts_hits(db, "ghost") == 0

    async with await Database.open(sqlite_url) as db:
        assert db.migration.fts_rebuilt is False  # in step now


async def test_backup_copies_committed_data_still_in_the_wal(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as db:
        await db.profiles.create_profile("walonly", "w@example.org", "x", {})
        path = Path(db.url.database or "")
        wal = path.with_name(path.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0  # the row is in the WAL so far
        async with db.engine.connect() as conn:
            backup = await backup_sqlite_database(conn, path, "0001")
    assert re.fullmatch(r"roost\.sqlite\.bak-0001-\d{8}T\d{6}Z", backup.name)
    assert backup.parent == path.parent
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    with sqlite3.connect(backup) as copy:
        names = [row[0] for row in copy.execute("SELECT name FROM profiles")]
        version = [row[0] for row in copy.execute("SELECT version_num FROM alembic_version")]
    assert names == ["walonly"]
    assert version == [_revisions()[-1]]


async def test_second_backup_in_the_same_second_keeps_the_first(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as db, db.engine.connect() as conn:
        path = Path(db.url.database or "")
        first = await backup_sqlite_database(conn, path, "0001")
        second = await backup_sqlite_database(conn, path, "0001")
    assert first != second
    assert first.exists() and second.exists()


def _parent_rebuild(conn: Connection) -> None:
    # What a batch migration on a parent table does on SQLite: copy, drop, rename.
    context = MigrationContext.configure(conn)
    with (
        Operations.context(context),
        Operations(context).batch_alter_table("profiles", recreate="always") as batch,
    ):
        batch.add_column(Column("extra_column", Integer, nullable=True))


async def test_batch_migrations_do_not_cascade_into_child_rows(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as db:
        await db.profiles.create_profile("p", "p@example.org", "x", {})
        await db.params.set_param("p", "c", "n", "v")
        await db.nodes.get_or_create_node("p", "pubsub.example.org", "blog")
        async with db.engine.connect() as conn:

            def guarded(sync_conn: Connection) -> None:
                with SqliteEngine().migration_transaction(sync_conn), sync_conn.begin():
                    _parent_rebuild(sync_conn)

            await conn.run_sync(guarded)
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert fks == 1
        assert await db.params.get_param("p", "c", "n") == "v"
        assert len(await db.nodes.list_nodes("p")) == 1


async def test_without_the_guard_a_rebuild_would_eat_child_rows(sqlite_url: str) -> None:
    # The control for the test above: the same rebuild with foreign keys on.
    async with await Database.open(sqlite_url) as db:
        await db.profiles.create_profile("p", "p@example.org", "x", {})
        await db.params.set_param("p", "c", "n", "v")
        async with db.engine.begin() as conn:
            await conn.run_sync(_parent_rebuild)
        async with db.engine.connect() as conn:
            params = (await conn.exec_driver_sql("SELECT count(*) FROM params")).scalar()
        assert params == 0


async def test_failed_migration_leaves_the_schema_untouched(sqlite_url: str) -> None:
    async with await Database.open(sqlite_url) as db, db.engine.connect() as conn:
        before = await conn.run_sync(_schema)

        def failing(sync_conn: Connection) -> None:
            with SqliteEngine().migration_transaction(sync_conn), sync_conn.begin():
                sync_conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
                sync_conn.exec_driver_sql("DROP TABLE params")
                raise RuntimeError("step failed")

        with pytest.raises(RuntimeError, match="step failed"):
            await conn.run_sync(failing)
        assert await conn.run_sync(_schema) == before
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


# A revision that exists only in a copy of the script directory made by the test below:
# it rebuilds the parent table of every other table, the riskiest kind of SQLite change.
_TEST_ONLY_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiles", recreate="always") as batch:
        batch.add_column(sa.Column("nickname", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("profiles", recreate="always") as batch:
        batch.drop_column("nickname")
"""


def _scripts_with_a_newer_revision(folder: Path) -> tuple[Config, str]:
    source = Path(str(resources.files("roost.storage.migrations")))
    target = folder / "migrations"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    head = _revisions()[-1]
    newer = f"{int(head) + 1:04d}"
    (target / "versions" / f"{newer}_test_only.py").write_text(
        _TEST_ONLY_REVISION.format(revision=newer, down=head)
    )
    return Config(str(target / "alembic.ini")), newer


async def test_older_database_is_backed_up_then_upgraded(sqlite_url: str, tmp_path: Path) -> None:
    config, newer = await asyncio.to_thread(_scripts_with_a_newer_revision, tmp_path)
    head = _revisions()[-1]
    url = resolve_database_url(sqlite_url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            for revision in _revisions():
                await conn.run_sync(run_alembic_upgrade, revision)
                await conn.run_sync(SEEDS[revision])
                await conn.commit()
            before = await conn.run_sync(_row_counts)

        outcome = await prepare_database(engine, url, config=config)

        async with engine.connect() as conn:
            after = await conn.run_sync(_row_counts)
            version = await conn.run_sync(_version)
            columns = [row[1] for row in await conn.exec_driver_sql("PRAGMA table_info(profiles)")]
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    finally:
        await engine.dispose()

    assert (outcome.action, outcome.from_revision, outcome.to_revision) == (
        "upgraded",
        head,
        newer,
    )
    assert version == [newer]
    assert "nickname" in columns
    assert after == before  # the rebuilt parent table took no child row with it
    assert fks == 1
    assert outcome.fts_rebuilt is False
    assert outcome.backup is not None
    assert outcome.backup.name.startswith(f"roost.sqlite.bak-{head}-")
    assert stat.S_IMODE(outcome.backup.stat().st_mode) == 0o600
    with sqlite3.connect(outcome.backup) as copy:
        copied = [row[0] for row in copy.execute("SELECT version_num FROM alembic_version")]
        names = [row[0] for row in copy.execute("SELECT name FROM profiles")]
    assert copied == [head]
    assert names == ["seed1"]

    # The code that knows only the package's revisions now refuses this database.
    with pytest.raises(DatabaseTooNew, match=newer):
        await Database.open(sqlite_url)


async def test_fulltext_check_can_be_left_for_after_start(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    await _items_with_fts(db)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO pubsub_items_fts(rowid, search_text) VALUES (99999, 'ghost')"
        )
    await close_as_killed(db)
    async with await Database.open(sqlite_url, check_fulltext=False) as db:
        assert db.migration.fts_rebuilt is False
        assert await _fts_hits(db, "ghost") == 1  # still drifted: nothing checked yet
        assert await db.repair_fulltext() is True
        assert await _fts_hits(db, "ghost") == 0
        assert await db.repair_fulltext() is False


async def test_a_fulltext_search_waits_for_the_check_left_for_after_start(
    sqlite_url: str,
) -> None:
    db = await Database.open(sqlite_url)
    await _items_with_fts(db)
    # Drift: one item's words leave the index (a manual edit), and no clean close.
    async with db.engine.begin() as conn:
        row_id = (
            await conn.execute(text("SELECT id FROM pubsub_items WHERE item_id = 'i3'"))
        ).scalar()
        await conn.execute(
            text(
                "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, search_text) "
                "VALUES ('delete', :r, 'word3 common')"
            ),
            {"r": row_id},
        )
    await close_as_killed(db)
    async with await Database.open(sqlite_url, check_fulltext=False) as db:
        searching = asyncio.create_task(db.search.search({"fts": "word3"}))
        # Other searches go on meanwhile.
        assert len(await db.search.search({"item_ids": ["i3"]})) == 1
        assert not searching.done()
        assert await db.repair_fulltext() is True
        hits = await asyncio.wait_for(searching, 30)
        # Answered from the rebuilt index, not the drifted one (which had no match).
        assert [hit.item_id for hit in hits] == ["i3"]


async def test_a_clean_close_spares_the_next_open_the_fulltext_check(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Database.open(sqlite_url) as db:
        await _items_with_fts(db)
    checks: list[bool] = []
    check = SqliteEngine.fulltext_is_consistent

    async def counted(self: SqliteEngine, conn: Any) -> bool:
        checks.append(True)
        return await check(self, conn)

    monkeypatch.setattr(SqliteEngine, "fulltext_is_consistent", counted)
    db = await Database.open(sqlite_url, check_fulltext=False)
    # Nothing to wait for: a full-text search answers at once.
    assert db.search.fulltext_checked.is_set()
    assert [hit.item_id for hit in await db.search.search({"fts": "word3"})] == ["i3"]
    assert checks == []
    # The mark is spent as the database opens: a daemon killed now leaves the index to
    # be checked at the next start.
    await close_as_killed(db)
    db = await Database.open(sqlite_url, check_fulltext=False)
    assert not db.search.fulltext_checked.is_set()
    assert await db.repair_fulltext() is False
    assert checks == [True]
    await db.close()
    # Closed cleanly once checked: the next open trusts it again.
    async with await Database.open(sqlite_url) as db:
        assert db.migration.fts_rebuilt is False
    assert checks == [True]


def test_head_revision_constant_is_the_script_directory_head() -> None:
    # A new migration bumps HEAD_REVISION too, or databases at head would be upgraded
    # (to the same revision) at every start.
    assert HEAD_REVISION == script_directory().get_current_head() == _revisions()[-1]


async def test_a_database_at_head_opens_without_alembic(sqlite_url: str) -> None:
    await (await Database.open(sqlite_url)).close()
    # A fresh interpreter: this one has imported Alembic for the other tests.
    script = (
        "import asyncio, sys\n"
        "from roost.storage import Database\n"
        "async def main():\n"
        f"    db = await Database.open({sqlite_url!r})\n"
        "    print(db.migration.action, db.migration.to_revision)\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["current", HEAD_REVISION, "False"]
