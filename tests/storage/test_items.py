"""The item store on a real SQLite file: writes, deletes, reads, purges, indexes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.database import Database
from roost.storage.engines import SqliteEngine, engine_for, sqlite_connections
from roost.storage.errors import InvalidQuery, RowNotFound
from roost.storage.item_records import ItemInput
from roost.storage.items import ItemStore, parsed_key_index_name
from roost.storage.search import SearchQuery, SearchStore, build_search
from tests.fixtures.crash import check_database


@dataclass
class Stores:
    """An open database with its item and search stores and a few nodes."""

    engine: AsyncEngine
    items: ItemStore
    search: SearchStore
    nodes: dict[str, int]
    database: Database


# (profile, service, node, type, subtype) of the nodes every test database holds.
NODES = {
    "blog": ("alice", "pubsub.example.org", "urn:xmpp:microblog:0", "blog", None),
    "news": ("alice", "news.example.org", "news", "feed", "atom"),
    "bob_blog": ("bob", "pubsub.example.org", "urn:xmpp:microblog:0", "blog", None),
}


async def open_stores(url: str) -> Stores:
    """Open (create and migrate) a new database with two profiles and the NODES."""
    db = await Database.open(url)
    for name in ("alice", "bob"):
        await db.profiles.create_profile(name, f"{name}@example.org", "x")
    nodes = {}
    for key, (profile, service, node, type_, subtype) in NODES.items():
        record = await db.nodes.get_or_create_node(profile, service, node)
        await db.nodes.set_analysis(record.id, "test", type_, subtype)
        nodes[key] = record.id
    return Stores(db.engine, db.items, db.search, nodes, db)


def item(
    item_id: str, text_: str = "", parsed: Any = None, created: float | None = None
) -> ItemInput:
    """An ItemInput with XML made from its id."""
    return ItemInput(
        item_id=item_id,
        publisher="alice@example.org",
        data=f"<item xmlns='http://jabber.org/protocol/pubsub' id='{item_id}'/>",
        parsed=parsed,
        search_text=text_ or f"text of {item_id}",
        created=created,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Stores]:
    stores = await open_stores(database_url)
    yield stores
    await stores.database.close()


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Stores]:
    """The stores on SQLite, for tests of SQLite's own query plans."""
    stores = await open_stores(sqlite_url)
    yield stores
    await stores.database.close()


def ids(records: Sequence[object]) -> list[str]:
    return [r.item_id for r in records]  # type: ignore[attr-defined]


async def test_parsed_text_is_made_with_the_item_and_written_as_it_is(
    db: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    blog = db.nodes["blog"]
    # Made with the item: a sync makes its items in a worker thread, and the store
    # writes them from the event loop.
    made = item("a", parsed={"title": "é", "n": 1})
    given = ItemInput("b", "", "<item/>", {"n": 2}, "", parsed_json='{"n":2}')
    assert made.parsed_json == '{"title":"é","n":1}'

    def no_encoding(*_args: Any, **_kwargs: Any) -> str:
        raise AssertionError("the store encoded parsed data again")

    reparsed = item("a", parsed={"n": 3})
    with monkeypatch.context() as patched:
        patched.setattr(json, "dumps", no_encoding)
        await db.items.upsert_items(blog, [made, given])
    stored = await db.items.get_item(blog, "a")
    assert stored is not None and stored.parsed == {"title": "é", "n": 1}
    with monkeypatch.context() as patched:
        patched.setattr(json, "dumps", no_encoding)
        assert await db.items.set_parsed(blog, [reparsed], [stored.updated]) == 1
    records = {r.item_id: r for r in (await db.items.get_items(blog)).items}
    assert records["a"].parsed == {"n": 3} and records["b"].parsed == {"n": 2}


async def test_upsert_orders_items_and_republish_moves_to_end(db: Stores) -> None:
    blog = db.nodes["blog"]
    assert await db.items.upsert_items(blog, [item("a"), item("b"), item("c")]) == 3
    before = await db.items.get_item(blog, "a")
    assert before is not None
    await db.items.upsert_items(blog, [item("a", parsed={"v": 2})])
    page = await db.items.get_items(blog)
    assert ids(page.items) == ["b", "c", "a"]
    after = await db.items.get_item(blog, "a")
    assert after is not None
    assert after.parsed == {"v": 2}
    assert after.created == before.created
    assert after.updated >= before.updated
    assert await db.items.count_items(blog) == 3
    assert [i for i, _ in await db.items.list_item_ids(blog)] == ["b", "c", "a"]


async def test_items_placed_at_the_start_go_before_every_item(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item("a", created=1.0)], at_start=True)
    await db.items.upsert_items(blog, [item("d"), item("e")])
    await db.items.upsert_items(blog, [item("b"), item("c")], at_start=True)
    await db.items.upsert_items(blog, [item("f")])
    assert [i for i, _ in await db.items.list_item_ids(blog)] == ["b", "c", "a", "d", "e", "f"]
    page = await db.items.get_items(blog, max_items=5)
    assert ids(page.items) == ["c", "a", "d", "e", "f"] and page.first_index == 1
    page = await db.items.get_items(blog, after="c", max_items=2)
    assert ids(page.items) == ["a", "d"]
    await db.items.trim_node(blog, 4)
    assert [i for i, _ in await db.items.list_item_ids(blog)] == ["a", "d", "e", "f"]


async def test_created_is_given_or_kept_and_parsed_none_is_sql_null(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item("a", created=1000.0)])
    await db.items.upsert_items(blog, [item("a", created=2000.0)])
    record = await db.items.get_item(blog, "a")
    assert record is not None
    assert record.created == 1000.0
    assert record.parsed is None
    assert record.data.startswith("<item ")
    async with db.engine.connect() as conn:
        assert (await conn.scalar(text("SELECT parsed IS NULL FROM pubsub_items"))) == 1


async def test_same_id_in_two_nodes_is_two_items(db: Stores) -> None:
    await db.items.upsert_items(db.nodes["blog"], [item("a", parsed={"n": 1})])
    await db.items.upsert_items(db.nodes["news"], [item("a", parsed={"n": 2})])
    first = await db.items.get_item(db.nodes["blog"], "a")
    second = await db.items.get_item(db.nodes["news"], "a")
    assert first is not None and second is not None
    assert (first.parsed, second.parsed) == ({"n": 1}, {"n": 2})
    assert await db.items.get_item(db.nodes["bob_blog"], "a") is None


async def test_large_batch_is_written_whole(db: Stores) -> None:
    blog = db.nodes["blog"]
    batch = [item(f"i{n}") for n in range(2500)]
    assert await db.items.upsert_items(blog, batch) == 2500
    assert [i for i, _ in await db.items.list_item_ids(blog)] == [f"i{n}" for n in range(2500)]
    async with db.engine.connect() as conn:
        assert await engine_for(conn).fulltext_is_consistent(conn)


async def test_deletes(db: Stores) -> None:
    blog, news = db.nodes["blog"], db.nodes["news"]
    await db.items.upsert_items(blog, [item(x) for x in "abcdef"])
    await db.items.upsert_items(news, [item(x) for x in "abc"])
    assert await db.items.delete_items(blog, ["a", "zz"]) == 1
    assert await db.items.delete_items(blog, []) == 0
    assert await db.items.delete_items_not_in(blog, ["b", "c", "nope"]) == 3
    assert [i for i, _ in await db.items.list_item_ids(blog)] == ["b", "c"]
    assert await db.items.count_items(news) == 3
    assert await db.items.clear_node(news) == 3
    assert await db.items.count_items(news) == 0
    assert await db.items.count_items(blog) == 2


async def _counts_kept_and_real(db: Stores) -> dict[str, tuple[int, int]]:
    """Each node's item count as the node keeps it, and as its rows count."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT n.id, n.item_count, (SELECT count(*) FROM pubsub_items i "
                "WHERE i.node_id = n.id) FROM pubsub_nodes n"
            )
        )
        found = {node: (kept, real) for node, kept, real in rows}
    return {key: found[node] for key, node in db.nodes.items() if node in found}


async def test_each_node_keeps_its_item_count_through_every_kind_of_write(db: Stores) -> None:
    blog, news, bob_blog = db.nodes["blog"], db.nodes["news"], db.nodes["bob_blog"]

    async def agree(**expected: int) -> None:
        counts = await _counts_kept_and_real(db)
        assert counts == {key: (n, n) for key, n in expected.items()}
        for key, n in expected.items():
            assert await db.items.count_items(db.nodes[key]) == n
            assert (await db.items.get_items(db.nodes[key], max_items=1)).count == n

    await db.items.upsert_items(blog, [item(x) for x in "abcdef"])
    await db.items.upsert_items(news, [item(x) for x in "abc"])
    await agree(blog=6, news=3, bob_blog=0)
    # A republication updates a row: no new item. A batch mixes both.
    await db.items.upsert_items(blog, [item("a", parsed={"v": 2}), item("g"), item("b")])
    await agree(blog=7, news=3, bob_blog=0)
    await db.items.delete_items(blog, ["a", "missing"])
    await db.items.delete_items_not_in(blog, ["b", "c", "d", "g"])
    await agree(blog=4, news=3, bob_blog=0)
    await db.items.trim_node(blog, 2)
    await db.items.clear_node(news)
    await agree(blog=2, news=0, bob_blog=0)
    await db.items.upsert_items(bob_blog, [item(x) for x in "xyz"])
    await db.items.upsert_items(news, [item("n")])
    assert await db.items.purge_items(profiles=["bob"]) == 3
    assert await db.items.purge_items(services=["news.example.org"]) == 1
    await agree(blog=2, news=0, bob_blog=0)
    # A node deleted with its items, and one created after, count from nothing.
    assert await db.database.nodes.delete_node(blog)
    fresh = await db.database.nodes.get_or_create_node("alice", "pubsub.example.org", "fresh")
    db.nodes = {"fresh": fresh.id, "news": news, "bob_blog": bob_blog}
    await db.items.upsert_items(fresh.id, [item("f")])
    await agree(fresh=1, news=0, bob_blog=0)


async def test_the_crash_check_finds_a_node_whose_count_is_wrong(
    db: Stores, database_url: str
) -> None:
    await db.items.upsert_items(db.nodes["blog"], [item(x) for x in "abc"])
    assert "item counts" in (found := await check_database(database_url)).checks
    assert found.problems == []
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE pubsub_nodes SET item_count = 7 WHERE id = :n"), {"n": db.nodes["blog"]}
        )
    assert (await check_database(database_url)).problems == ["1 node(s) keep a wrong item count"]


async def test_trim_keeps_the_newest(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item(x) for x in "abcdef"])
    await db.items.upsert_items(blog, [item("a")])  # now the newest
    assert await db.items.trim_node(blog, 3) == 3
    assert [i for i, _ in await db.items.list_item_ids(blog)] == ["e", "f", "a"]
    assert await db.items.trim_node(blog, 10) == 0
    assert await db.items.trim_node(blog, 0) == 3
    with pytest.raises(InvalidQuery):
        await db.items.trim_node(blog, -1)


async def test_deleted_items_leave_the_fulltext_index(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item("a", "marmalade"), item("b", "toast")])
    query = SearchQuery.from_mapping({"fts": "marmalade"})
    assert ids(await db.search.search_items(query)) == ["a"]
    await db.items.upsert_items(blog, [item("a", "jam")])
    assert await db.search.search_items(query) == []
    await db.items.delete_items(blog, ["b"])
    assert await db.search.search_items(SearchQuery.from_mapping({"fts": "toast"})) == []
    async with db.engine.connect() as conn:
        assert await engine_for(conn).fulltext_is_consistent(conn)


async def test_get_items_paging_examples(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item(x) for x in "abcdefg"])
    page = await db.items.get_items(blog, max_items=3)
    assert (ids(page.items), page.first, page.last) == (["e", "f", "g"], "e", "g")
    assert (page.first_index, page.count, page.complete) == (4, 7, False)
    page = await db.items.get_items(blog, max_items=2, before="e")
    assert (ids(page.items), page.first_index, page.complete) == (["c", "d"], 2, False)
    page = await db.items.get_items(blog, max_items=5, before="c")
    assert (ids(page.items), page.first_index, page.complete) == (["a", "b"], 0, True)
    page = await db.items.get_items(blog, max_items=3, after="")
    assert (ids(page.items), page.complete) == (["a", "b", "c"], False)
    page = await db.items.get_items(blog, max_items=3, after="e")
    assert (ids(page.items), page.first_index, page.complete) == (["f", "g"], 5, True)
    page = await db.items.get_items(blog, max_items=3, after="g")
    assert (page.items, page.first, page.last, page.complete) == ([], None, None, True)
    page = await db.items.get_items(blog, max_items=2, index=3)
    assert (ids(page.items), page.first_index) == (["d", "e"], 3)
    page = await db.items.get_items(blog, item_ids=["g", "b", "zz", "d"], before="", max_items=2)
    assert (ids(page.items), page.count, page.first_index) == (["d", "g"], 3, 1)
    page = await db.items.get_items(blog, before="", page_size=4)
    assert ids(page.items) == ["d", "e", "f", "g"]


async def test_get_items_refuses_unknown_anchor_and_bad_arguments(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(blog, [item(x) for x in "abc"])
    with pytest.raises(RowNotFound):
        await db.items.get_items(blog, after="zz")
    with pytest.raises(RowNotFound):  # in the node, but not in the item_ids list
        await db.items.get_items(blog, before="a", item_ids=["b", "c"])
    with pytest.raises(RowNotFound):  # another node's item
        await db.items.get_items(db.nodes["news"], after="a")
    with pytest.raises(InvalidQuery):
        await db.items.get_items(blog, after="a", before="c")
    with pytest.raises(InvalidQuery):
        await db.items.get_items(blog, after="a", index=1)
    with pytest.raises(InvalidQuery):
        await db.items.get_items(blog, max_items=-1)


async def test_purge_by_filters(db: Stores) -> None:
    for key in db.nodes:
        await db.items.upsert_items(db.nodes[key], [item(x) for x in "abc"])
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE pubsub_items SET updated = 100 WHERE item_id = 'a'"))
    assert await db.items.purge_items(profiles=["bob"], older_than=200) == 1
    assert await db.items.count_items(db.nodes["bob_blog"]) == 2
    assert await db.items.purge_items(types=["feed"]) == 3
    assert await db.items.purge_items(services=["pubsub.example.org"], nodes=["nope"]) == 0
    assert await db.items.purge_items(older_than=200) == 1  # alice's blog "a"
    assert await db.items.count_items(db.nodes["blog"]) == 2
    assert await db.items.purge_items() == 4
    assert await db.items.purge_items() == 0


async def test_parsed_key_index_is_used_by_equality_search(db: Stores) -> None:
    blog = db.nodes["blog"]
    await db.items.upsert_items(
        blog, [item(f"i{n}", parsed={"author": {"name": f"user{n % 3}"}}) for n in range(9)]
    )
    await db.items.ensure_parsed_key_index("author.name")
    await db.items.ensure_parsed_key_index("author.name")  # idempotent
    name = parsed_key_index_name("author.name")
    assert name == "ix_parsed_author__name"
    query = SearchQuery.from_mapping(
        {"parsed": [{"path": "author.name", "op": "eq", "value": "user1"}]}
    )
    from roost.storage.search import build_search

    stmt = build_search(query, engine_for(db.engine))
    compiled = stmt.compile(db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Nine rows: a scan is cheaper, unless the planner is told scans are out.
            await conn.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN"
        else:
            explain = "EXPLAIN QUERY PLAN"
        plan = (await conn.exec_driver_sql(f"{explain} {compiled}")).all()
    assert any(name in row[-1] for row in plan), plan
    assert sorted(ids(await db.search.search_items(query))) == ["i1", "i4", "i7"]
    with pytest.raises(InvalidQuery):
        await db.items.ensure_parsed_key_index("author;drop")


def test_index_names_never_collide() -> None:
    paths = ["a.b", "a__b", "a-b", "a_b", "a._b", "a_.b", "tags.0"]
    assert len({parsed_key_index_name(p) for p in paths}) == len(paths)


async def test_search_hit_carries_location(db: Stores) -> None:
    await db.items.upsert_items(
        db.nodes["news"], [item("n1", "breaking story", parsed={"title": "T"}, created=5.0)]
    )
    [hit] = await db.search.search({"fts": "story"})
    assert (hit.profile, hit.service, hit.node) == ("alice", "news.example.org", "news")
    assert (hit.type, hit.subtype, hit.created) == ("feed", "atom", 5.0)
    assert hit.record().parsed == {"title": "T"}
    assert json.loads(json.dumps(hit.parsed)) == {"title": "T"}


async def test_broad_fulltext_term_walks_the_date_index_with_the_same_answer(
    sqlite_db: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite_db
    from roost.storage import search as search_module
    from roost.storage.search import build_search

    blog, news = db.nodes["blog"], db.nodes["news"]
    await db.items.upsert_items(
        blog,
        [item(f"b{n}", "common" + (" rare" if n % 7 == 0 else ""), created=n) for n in range(60)],
    )
    await db.items.upsert_items(news, [item(f"n{n}", "common", created=n + 0.5) for n in range(60)])
    queries = [{"fts": "common", "limit": 15}, {"fts": "rare", "offset": 2}, {"fts": "common rare"}]
    narrow = [ids(await db.search.search(q)) for q in queries]
    monkeypatch.setattr(search_module, "BROAD_MATCH_COUNT", 0)
    broad = [ids(await db.search.search(q)) for q in queries]
    assert broad == narrow
    assert narrow[0][:3] == ["n59", "b59", "n58"]

    stmt = build_search(SearchQuery.from_mapping(queries[0]), SqliteEngine(), walk_created=True)
    compiled = stmt.compile(db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with db.engine.connect() as conn:
        plan = " ".join(
            row[-1] for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        )
    assert "ix_pubsub_items_created" in plan, plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan, plan


async def test_the_match_count_stops_at_its_cap_and_a_rare_term_is_looked_up_by_its_matches(
    db: Stores,
) -> None:
    """Telling a broad term from a rare one reads at most ``cap`` matches; a rare term's
    matches are read first and sorted, not found by walking every item by date."""
    blog = db.nodes["blog"]
    await db.items.upsert_items(
        blog,
        [item(f"b{n}", "common" + (" rare" if n % 10 == 0 else ""), created=n) for n in range(50)],
    )
    engine = engine_for(db.engine)
    async with db.engine.connect() as conn:
        counts = [
            (await conn.execute(engine.fulltext_count([term], cap))).scalar()
            for term, cap in (("common", 20), ("common", 500), ("rare", 3), ("absent", 5))
        ]
        assert counts == [20, 50, 3, 0]
        rare = build_search(SearchQuery.from_mapping({"fts": "rare", "limit": 3}), engine)
        compiled = rare.compile(db.engine.sync_engine, compile_kwargs={"literal_binds": True})
        explain = "EXPLAIN QUERY PLAN" if engine.name == "sqlite" else "EXPLAIN"
        plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(f"{explain} {compiled}"))
    assert "ix_pubsub_items_created" not in plan, plan
    assert ids(await db.search.search({"fts": "rare", "limit": 3})) == ["b40", "b30", "b20"]


async def test_batches_walk_a_node_and_set_parsed_changes_only_parsed_data(db: Stores) -> None:
    blog, news = db.nodes["blog"], db.nodes["news"]
    await db.items.upsert_items(blog, [item(f"i{n}", "marmalade") for n in range(7)])
    await db.items.upsert_items(news, [item("other", "marmalade")])
    await db.items.upsert_items(blog, [item("i0", "marmalade")])  # republished: moved last
    seen: list[str] = []
    after, batches = 0, 0
    while True:
        batch = await db.items.get_item_batch(blog, after_row=after, limit=3)
        seen += ids(batch.items)
        batches += 1
        if batch.next_row is None:
            break
        after = batch.next_row
    assert sorted(seen) == sorted(f"i{n}" for n in range(7)) and batches == 3
    with pytest.raises(InvalidQuery):
        await db.items.get_item_batch(blog, limit=0)

    before = {r.item_id: r for r in (await db.items.get_items(blog)).items}
    stale = await db.items.get_item(blog, "i3")
    assert stale is not None
    # i3 is written again between the read and the re-parse: left as its writer left it.
    await db.items.upsert_items(blog, [item("i3", "marmalade", parsed={"v": "writer"})])
    order = ids((await db.items.get_items(blog)).items)
    new = [item(i, "jam", parsed={"v": "again"}) for i in ("i1", "i3", "gone")]
    written = [before["i1"].updated, stale.updated, 0.0]
    assert await db.items.set_parsed(blog, new, written) == 1
    after_items = {r.item_id: r for r in (await db.items.get_items(blog)).items}
    one = after_items["i1"]
    assert one.parsed == {"v": "again"}
    assert (one.data, one.created, one.updated) == (
        before["i1"].data,
        before["i1"].created,
        before["i1"].updated,
    )
    assert after_items["i3"].parsed == {"v": "writer"}
    # Same order, and the full-text index follows the new search text.
    assert ids((await db.items.get_items(blog)).items) == order
    jam = await db.search.search_items(SearchQuery.from_mapping({"fts": "jam"}))
    assert ids(jam) == ["i1"]
    async with db.engine.connect() as conn:
        assert await engine_for(conn).fulltext_is_consistent(conn)
    with pytest.raises(InvalidQuery):
        await db.items.set_parsed(blog, new, written[:1])


async def test_large_writes_at_once_take_turns_instead_of_failing_on_the_lock(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many syncs writing pages at once: SQLite has one writer, and a page of thousands
    of items holds it for a while. With a busy timeout shorter than one such write, every
    write still lands, queued by the store rather than failing "database is locked"."""
    monkeypatch.setattr(sqlite_connections, "SQLITE_BUSY_TIMEOUT_MS", 20)
    stores = await open_stores(sqlite_url)
    try:
        nodes = [
            (await stores.database.nodes.get_or_create_node("alice", "s.example.org", f"n{n}")).id
            for n in range(12)
        ]
        pages = [[item(f"{node}-{i}", "words " * 20) for i in range(2000)] for node in nodes]
        await asyncio.gather(
            *(
                stores.items.upsert_items(node, page)
                for node, page in zip(nodes, pages, strict=True)
            )
        )
        assert [await stores.items.count_items(node) for node in nodes] == [2000] * len(nodes)
    finally:
        await stores.database.close()
