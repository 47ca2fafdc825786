"""copy_database: a whole Roost database from SQLite to PostgreSQL and back, checked."""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from roost.storage import Database, ItemInput, RosterEntry
from roost.storage.copy import (
    TABLES,
    CopyMismatch,
    InvalidTarget,
    TargetNotEmpty,
    TargetUnavailable,
    copy_database,
)
from roost.storage.engine import create_engine
from roost.storage.engines import engine_for
from roost.storage.table_checksum import TableChecksum, canonical_json
from tests.fixtures.xmpp import LOOPBACK, free_port

ITEMS = 10_000
BLOG = "urn:xmpp:microblog:0"
#: Values of several D-Bus types, in the JSON form the store keeps.
VALUES: list[tuple[str, str, Any]] = [
    ("text", "s", "text é ✓"),
    ("big", "t", 2**64 - 1),
    ("negative", "x", -(2**63)),
    ("huge", "d", 1e300),
    ("tenth", "d", 0.1),
    ("flag", "b", True),
    ("list", "as", ["a", "b"]),
    # As the D-Bus bridge encodes them: pairs for a dict, [signature, value] for a variant.
    ("nested", "a{sv}", [["k", ["ai", [1, 2]]], ["é", ["b", False]]]),
    ("bytes", "ay", "AAEC/w=="),
    ("pair", "(id)", [7, 2.5]),
]


def parsed(n: int) -> dict[str, Any]:
    """Parsed data of item ``n``: nested values of every JSON kind, keys out of order."""
    return {
        "title": f"Post {n}",
        "tags": [f"t{n % 7}", *(["café"] if n % 10 == 0 else [])],
        "rating": n % 5 + 0.5,
        "draft": n % 2 == 0,
        "meta": {"z": n, "a": None, "ß": "straße"},
    }


def item(n: int) -> ItemInput:
    """Item ``n`` of the blog; one in ten speaks of a café (a word with a diacritic)."""
    words = f"Post {n} about the {'café crème' if n % 10 == 0 else 'weather'}"
    return ItemInput(
        f"post-{n}",
        "alice@example.org",
        f"<item id='post-{n}'><entry xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>Post {n}</title></entry></item>",
        parsed(n),
        words,
        1_700_000_000.0 + n / 8,
    )


async def populate(db: Database, items: int = ITEMS) -> None:
    """Profiles, params, values of several types, nodes, items, a roster, requests."""
    await db.profiles.create_profile(
        "alice",
        "alice@example.org",
        "s3cret",
        {"host": "127.0.0.1", "port": 5223, "tls": "starttls", "autoconnect": False},
    )
    await db.profiles.create_profile("bob", "bob@example.org", "pw", {})
    await db.params.set_param(None, "ui", "theme", "dark")
    await db.params.set_param("alice", "ui", "font", "Serif 11")
    for owner in (None, "alice"):
        for key, signature, value in VALUES:
            await db.values.set_value(owner, "app", key, signature, value)
    blog = await db.nodes.get_or_create_node("alice", "alice@example.org", BLOG)
    await db.nodes.set_analysis(blog.id, "microblog", "blog", None)
    await db.nodes.set_subscribed(blog.id, True)
    await db.nodes.set_sync_state(
        blog.id, "completed", extra={"retries": 2, "nested": {"b": [1, 2.5, "é"], "a": True}}
    )
    other = await db.nodes.get_or_create_node("bob", "pubsub.example.org", "news")
    await db.nodes.set_sync_state(other.id, "no_sync", extra={"reason": "no subscription"})
    await db.items.upsert_items(other.id, [ItemInput("raw", "", "<item id='raw'/>", None, "")])
    for start in range(0, items, 2_000):
        end = min(start + 2_000, items)
        await db.items.upsert_items(blog.id, [item(n) for n in range(start, end)])
    await db.roster.replace_roster(
        "alice",
        "ver-7",
        [
            RosterEntry("juliet@example.org", "Juliet", ("Friends", "Verona"), "both"),
            RosterEntry("romeo@example.org", subscription="to", pending_out=True),
        ],
    )
    await db.roster.add_subscription_request("alice", "tybalt@example.org", "let me in", 1234.5)
    await db.cache_subscriptions.record_subscription("bob", "pubsub.example.org", "news", "sub-1")


async def rows_of(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Roost table, in primary-key order, as the driver gives them."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with db.engine.connect() as conn:
        for table in TABLES:
            query = select(*table.columns).order_by(*table.primary_key.columns)
            found[table.name] = [tuple(row) for row in await conn.execute(query)]
    return found


def folded(rows: dict[str, list[tuple[Any, ...]]], db: Database) -> dict[str, Any]:
    """``rows`` with each item's search text in the form ``db`` stores it."""
    at = [column.name for column in TABLES[-1].columns].index("search_text")
    fold = engine_for(db.engine).indexed_text
    return {
        **rows,
        "pubsub_items": [
            (*row[:at], fold(row[at]), *row[at + 1 :]) for row in rows["pubsub_items"]
        ],
    }


async def search_ids(db: Database, query: dict[str, Any]) -> list[str]:
    return [hit.item_id for hit in await db.search.search({**query, "limit": 1000})]


async def open_populated(url: str) -> Database:
    db = await Database.open(url)
    await populate(db)
    return db


def run_elsewhere(work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` to its end on a loop of its own, in another thread, now: a write the
    copy cannot see coming, made while it waits."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def mode_of(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


async def execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


# -- the round trip ---------------------------------------------------------------------


async def test_sqlite_to_postgresql_and_back_keeps_every_row(
    sqlite_url: str, postgresql_url: str, tmp_path: Path
) -> None:
    back_url = f"sqlite+aiosqlite:///{tmp_path / 'back' / 'roost.sqlite'}"
    source = await open_populated(sqlite_url)
    try:
        original = await rows_of(source)
        to_pg = await copy_database(source, postgresql_url)
        found_source = [await search_ids(source, query) for query in SEARCHES]
    finally:
        await source.close()
    assert {t.table: t.rows for t in to_pg.tables} == {
        name: len(rows) for name, rows in original.items()
    }
    assert len(original["pubsub_items"]) == ITEMS + 1

    pg = await Database.open(postgresql_url)
    try:
        on_pg = await rows_of(pg)
        assert on_pg == folded(original, pg)
        to_sqlite = await copy_database(pg, back_url)
        found_pg = [await search_ids(pg, query) for query in SEARCHES]
    finally:
        await pg.close()
    assert [(t.table, t.rows, t.checksum) for t in to_sqlite.tables] == [
        (t.table, t.rows, t.checksum) for t in to_pg.tables
    ]

    back = await Database.open(back_url)
    try:
        assert await rows_of(back) == on_pg
        found_back = [await search_ids(back, query) for query in SEARCHES]
    finally:
        await back.close()
    assert found_source == found_pg == found_back
    assert [len(ids) for ids in found_back] == [ITEMS // 10, ITEMS // 10, 1, 1000]

    target = tmp_path / "back" / "roost.sqlite"
    assert mode_of(target) == 0o600
    assert mode_of(target.parent) == 0o700


SEARCHES: list[dict[str, Any]] = [
    {"fts": "creme"},
    {"fts": "café", "order_by": [{"field": "created", "direction": "asc"}]},
    {"parsed": [{"path": "title", "op": "eq", "value": "Post 4321"}]},
    {"parsed": [{"path": "tags", "op": "contains", "value": "t3"}], "types": ["blog"]},
]


@pytest.mark.parametrize("target", ["postgresql_url", "sqlite_url"])
async def test_new_rows_after_a_copy_take_fresh_ids(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'source.sqlite'}")
    try:
        await populate(source, items=50)
        await copy_database(source, request.getfixturevalue(target))
    finally:
        await source.close()
    copy = await Database.open(request.getfixturevalue(target))
    try:
        before = await rows_of(copy)
        await copy.profiles.create_profile("carol", "carol@example.org", "pw", {})
        await copy.params.set_param("carol", "ui", "theme", "light")
        await copy.values.set_value("carol", "app", "text", "s", "new")
        node = await copy.nodes.get_or_create_node("carol", "carol@example.org", BLOG)
        await copy.items.upsert_items(node.id, [item(n) for n in range(3)])
        await copy.roster.replace_roster("carol", None, [RosterEntry("dave@example.org")])
        await copy.roster.add_subscription_request("carol", "eve@example.org", "", 1.0)
        await copy.cache_subscriptions.record_subscription("carol", "s.example.org", "n", "")
        after = await rows_of(copy)
    finally:
        await copy.close()
    for table in TABLES:
        old_ids = {row[0] for row in before[table.name]}
        new_rows = [row for row in after[table.name] if row[0] not in old_ids]
        assert new_rows, table.name
        assert min(row[0] for row in new_rows) > max(old_ids), table.name


# -- what the copy refuses --------------------------------------------------------------


async def test_a_target_with_rows_is_refused_and_left_as_it_was(
    sqlite_url: str, postgresql_url: str
) -> None:
    target = await Database.open(postgresql_url)
    await target.profiles.create_profile("zed", "zed@example.org", "pw", {})
    await target.close()
    source = await Database.open(sqlite_url)
    try:
        await populate(source, items=10)
        with pytest.raises(TargetNotEmpty, match=r"profiles: 1 rows") as refused:
            await copy_database(source, postgresql_url)
    finally:
        await source.close()
    assert refused.value.counts == {"profiles": 1}
    target = await Database.open(postgresql_url)
    try:
        assert [p.name for p in await target.profiles.list_profiles()] == ["zed"]
    finally:
        await target.close()


@pytest.mark.parametrize("target", ["postgresql_url", "sqlite_url"])
async def test_replace_empties_the_target_first(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(target)
    old = await Database.open(url)
    await old.profiles.create_profile("zed", "zed@example.org", "pw", {})
    await populate_other(old)
    await old.close()
    source = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'source.sqlite'}")
    try:
        await populate(source, items=100)
        original = await rows_of(source)
        report = await copy_database(source, url, replace=True)
    finally:
        await source.close()
    assert sum(t.rows for t in report.tables) == sum(len(rows) for rows in original.values())
    copy = await Database.open(url)
    try:
        assert await rows_of(copy) == folded(original, copy)
    finally:
        await copy.close()


async def populate_other(db: Database) -> None:
    """Rows that share ids with :func:`populate`'s, under other names."""
    await db.profiles.create_profile("yves", "yves@example.org", "pw", {})
    node = await db.nodes.get_or_create_node("yves", "yves@example.org", BLOG)
    await db.items.upsert_items(node.id, [item(n) for n in range(5)])
    await db.values.set_value(None, "app", "text", "s", "old")


async def test_a_copy_onto_itself_is_refused_whatever_the_spelling(
    sqlite_url: str, tmp_path: Path
) -> None:
    source = await open_populated_small(sqlite_url)
    path = tmp_path / "roost.sqlite"
    link = tmp_path / "link.sqlite"
    link.symlink_to(path)
    spellings = [str(path), f"{tmp_path}/../{tmp_path.name}/roost.sqlite", str(link)]
    try:
        before = await rows_of(source)
        for spelling in spellings:
            for replace in (False, True):
                with pytest.raises(InvalidTarget, match="the database being copied"):
                    await copy_database(source, f"sqlite:///{spelling}", replace=replace)
        assert await rows_of(source) == before
    finally:
        await source.close()


async def test_a_postgresql_database_onto_itself_is_refused(postgresql_url: str) -> None:
    source = await open_populated_small(postgresql_url)
    other_spelling = postgresql_url.replace(f"@{LOOPBACK}:", "@localhost:")
    try:
        for url in (postgresql_url, other_spelling):
            with pytest.raises(InvalidTarget, match="the database being copied"):
                await copy_database(source, url, replace=True)
        assert len((await rows_of(source))["pubsub_items"]) == 11
    finally:
        await source.close()


async def open_populated_small(url: str) -> Database:
    db = await Database.open(url)
    await populate(db, items=10)
    return db


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "give the URL"),
        ("not a url", "not a database URL"),
        ("postgresql://me:pw@localhost:port/roost", "not a database URL"),
        ("mysql://me:pw@localhost/roost", "SQLite and PostgreSQL"),
        ("sqlite://", "in-memory"),
        ("sqlite:///relative/roost.sqlite", "absolute path"),
    ],
)
async def test_targets_that_are_no_database_are_refused(
    sqlite_url: str, url: str, message: str
) -> None:
    source = await Database.open(sqlite_url)
    try:
        with pytest.raises(InvalidTarget, match=message) as refused:
            await copy_database(source, url)
    finally:
        await source.close()
    assert "pw" not in str(refused.value)


async def test_a_directory_is_no_target(sqlite_url: str, tmp_path: Path) -> None:
    source = await Database.open(sqlite_url)
    try:
        with pytest.raises(InvalidTarget, match="is not a file"):
            await copy_database(source, f"sqlite:///{tmp_path}")
    finally:
        await source.close()
    assert mode_of(tmp_path) != 0o600


async def test_an_unreachable_server_is_named_without_its_password(sqlite_url: str) -> None:
    source = await Database.open(sqlite_url)
    try:
        url = f"postgresql://roost:hunter2@{LOOPBACK}:{free_port()}/roost"
        with pytest.raises(TargetUnavailable, match="cannot reach") as refused:
            await copy_database(source, url)
    finally:
        await source.close()
    assert "hunter2" not in str(refused.value)
    assert "***" in str(refused.value)


async def test_a_missing_postgresql_database_is_named(sqlite_url: str, postgresql_url: str) -> None:
    source = await Database.open(sqlite_url)
    try:
        missing = postgresql_url.rsplit("/", 1)[0] + "/no_such_database"
        with pytest.raises(TargetUnavailable, match='"no_such_database" does not exist'):
            await copy_database(source, missing)
    finally:
        await source.close()


# -- one snapshot, and a check that can fail ----------------------------------------------


@pytest.mark.parametrize("source_url", ["sqlite_url", "postgresql_url"])
async def test_writes_during_the_copy_are_not_in_it(
    source_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(source_url)
    source = await open_populated_small(url)
    written: list[str] = []

    def write_late(table: str, _done: int) -> None:
        # Items are copied last: this row lands after the copy began, before it reads them.
        if table == "profiles" and not written:
            run_elsewhere(
                lambda: execute(
                    url,
                    "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, "
                    "search_text, created, updated) VALUES (1, 'late', '', 99, '<item/>', "
                    "'late', 1, 1)",
                )
            )
            written.append(table)

    try:
        report = await copy_database(
            source, f"sqlite:///{tmp_path / 'copy.sqlite'}", progress=write_late
        )
        now = await rows_of(source)
    finally:
        await source.close()
    assert written == ["profiles"]
    assert len(now["pubsub_items"]) == 12
    assert {t.table: t.rows for t in report.tables}["pubsub_items"] == 11


async def test_a_copy_that_differs_from_its_source_is_reported(
    sqlite_url: str, postgresql_url: str
) -> None:
    source = await open_populated_small(sqlite_url)

    def write_into_target(table: str, _done: int) -> None:
        if table == "profiles":
            run_elsewhere(
                lambda: execute(
                    postgresql_url,
                    "INSERT INTO kv_store (id, profile_id, namespace, key, value_type, value) "
                    "VALUES (99999, NULL, 'intruder', 'k', 's', '\"x\"')",
                )
            )

    try:
        with pytest.raises(CopyMismatch, match=r"kv_store \(20 rows copied, 21 read back") as bad:
            await copy_database(source, postgresql_url, progress=write_into_target)
    finally:
        await source.close()
    assert bad.value.tables == ("kv_store",)


# -- the checksum -----------------------------------------------------------------------


def test_json_is_summed_by_value_not_by_spelling() -> None:
    assert canonical_json({"b": 1, "a": [1.0, "é"]}) == canonical_json({"a": [1, "é"], "b": 1.0})
    assert canonical_json(1e300) == canonical_json(10**300)
    assert canonical_json(0.1) == "0.1"
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(None) != canonical_json("null")
    assert canonical_json({"a": {"b": 2}}) != canonical_json({"a": {"b": 3}})


def test_a_checksum_does_not_depend_on_how_rows_are_batched() -> None:
    columns = tuple(TABLES[-1].columns)
    rows = [
        (n, 1, f"i{n}", "", n, "<item/>", {"n": n}, "text", float(n), float(n)) for n in range(10)
    ]
    whole, split = TableChecksum(columns), TableChecksum(columns)
    whole.add(rows)
    split.add(rows[:3])
    split.add(rows[3:])
    assert whole.hexdigest() == split.hexdigest()
    assert whole.rows == split.rows == 10
    shifted = TableChecksum(columns)
    shifted.add([(*rows[0][:2], "i0x", "", *rows[0][4:]), *rows[1:]])
    assert shifted.hexdigest() != whole.hexdigest()


async def test_a_snapshot_leaves_its_connection_able_to_write(database_url: str) -> None:
    await (await Database.open(database_url)).close()
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            await engine_for(engine).begin_snapshot(conn)
            await conn.execute(text("SELECT count(*) FROM profiles"))
        # The pool's one connection, back from the snapshot: it writes as before.
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO params (category, name, value) VALUES ('c', 'n', 'v')")
            )
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM params"))).scalar() == 1
    finally:
        await engine.dispose()
