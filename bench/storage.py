"""Storage benchmark: item upsert rate and search latency, on SQLite and on PostgreSQL.

Prints one JSON object a line (bench, metric, value, unit, and where it compares:
baseline, ratio); progress goes to stderr. See docs/performance.md for what each figure
means. Sizes can be lowered for a quick run: ``ROOST_BENCH_SMALL=1``.

Both databases get the same items and the same operations in the same run; each
figure's name says its database (``sqlite``, ``postgresql``). PostgreSQL is a throwaway
cluster set up as a deployment would be (``bench/postgres_cluster.py``).

1. Upsert rate: the same 100k items (2 KB Atom-like XML, 0.5 KB parsed JSON, full-text
   indexed text) written through ``ItemStore.upsert_items`` in batches of 1,000, and by
   the plain driver's ``executemany`` in one transaction (``sqlite3``, ``asyncpg``),
   each into a fresh database with the same schema: the FTS5 table and its triggers on
   SQLite, the generated ``tsvector`` and its GIN index on PostgreSQL.
2. Search latency (median, p95) at 100k items (the store-written databases) and at 1M
   (bulk-loaded: with plain sqlite3, then the FTS index rebuilt; with COPY on
   PostgreSQL, the index kept as rows arrive), through ``SearchStore`` and ``ItemStore``
   as the service calls them. A PostgreSQL database is vacuumed and analysed first, as
   autovacuum does after a large write. PostgreSQL's figures carry SQLite's as their
   baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit, spread, upper
from bench.postgres_cluster import analyse, bench_cluster, copy_items, insert_items, settings_text
from roost.storage import Database
from roost.storage.engine import create_engine
from roost.storage.fulltext import FTS_TABLE, SQLITE_FTS_DDL, SQLITE_FTS_DROP
from roost.storage.item_records import ItemInput
from roost.storage.items import ItemStore
from roost.storage.models import Profile, PubsubNode
from roost.storage.search import SearchStore
from roost.storage.search_limits import SEARCH_TIME_BUDGET, SearchTimeout

SMALL = bool(os.environ.get("ROOST_BENCH_SMALL"))
UPSERT_ITEMS = 10_000 if SMALL else 100_000
LARGE_ITEMS = 100_000 if SMALL else 1_000_000
NODES = 100
PROFILES = 10
AUTHORS = 2_000
BATCH = 1_000
RUNS = 40
# The store's upsert rate against plain sqlite3's, at least.
UPSERT_TARGET_RATIO = 0.4
# Median search latency at 1M items, at most (ms).
SEARCH_TARGET_MS = {"fts_selective": 50.0, "parsed_eq": 50.0}
SELECTIVE_EVERY = 250  # "zanzibar" in 0.4% of items
COMMON_EVERY = 2  # "harbour" in half of the items
BASE_TIME = 1_600_000_000.0
SQLITE, POSTGRESQL = "sqlite", "postgresql"

ITEM_SQL = (
    "INSERT INTO pubsub_items (node_id, item_id, publisher, position, data, parsed, "
    "search_text, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def progress(message: str) -> None:
    """Say what runs now, on stderr."""
    print(f"[storage] {message}", file=sys.stderr, flush=True)


class Corpus:
    """Deterministic Atom-like items: a Zipf-ish vocabulary in pooled paragraphs."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ren", "tas", "vo", "quel", "dor", "pe", "su", "ni", "bra"]
        words = sorted({"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(8000)})
        weights = [1 / (rank + 1) for rank in range(len(words))]
        self.paragraphs = [
            " ".join(rng.choices(words, weights, k=rng.randint(35, 50))) for _ in range(3000)
        ]
        self.titles = [" ".join(rng.choices(words, weights, k=7)).capitalize() for _ in range(500)]
        self.tags = words[:200]
        self.rng = rng

    def item(self, n: int) -> tuple[str, str, str, dict[str, Any], str, float]:
        """Item ``n``: (item_id, publisher, xml, parsed, search_text, created)."""
        rng = self.rng
        item_id = f"entry-{n:08d}"
        author = f"user{n % AUTHORS}"
        title = f"{rng.choice(self.titles)} {n}"
        body = [rng.choice(self.paragraphs) for _ in range(4)]
        if n % SELECTIVE_EVERY == 0:
            body.append("zanzibar")
        if n % COMMON_EVERY == 0:
            body.append("harbour")
        content = "\n".join(body)
        tags = rng.sample(self.tags, 3)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE_TIME + n))
        categories = "".join(f'<category term="{t}"/>' for t in tags)
        xml = (
            f"<item xmlns='http://jabber.org/protocol/pubsub' id='{item_id}'>"
            f"<entry xmlns='http://www.w3.org/2005/Atom'><title type='text'>{title}</title>"
            f"<id>urn:uuid:{n:032x}</id><published>{stamp}</published><updated>{stamp}"
            f"</updated><author><name>{author}</name><uri>xmpp:{author}@example.org</uri>"
            f"</author><content type='text'>{content}</content>{categories}"
            f"<link rel='replies' href='xmpp:pubsub.example.org?;node=comments-{n}'/>"
            "</entry></item>"
        )
        parsed = {
            "id": item_id,
            "title": title,
            "author": {"name": author, "uri": f"xmpp:{author}@example.org"},
            "published": stamp,
            "updated": stamp,
            "tags": tags,
            "summary": content[:240],
            "comments": f"xmpp:pubsub.example.org?;node=comments-{n}",
        }
        return item_id, f"{author}@example.org", xml, parsed, f"{title}\n{content}", BASE_TIME + n

    def rows(self, count: int) -> Iterator[tuple[Any, ...]]:
        """Plain sqlite3 rows, spread over the nodes in batches as a sync writes them."""
        positions = [0] * (NODES + 1)
        for n in range(count):
            node_id = (n // BATCH) % NODES + 1
            positions[node_id] += 1
            item_id, publisher, xml, parsed, search_text, created = self.item(n)
            yield (
                node_id,
                item_id,
                publisher,
                positions[node_id],
                xml,
                json.dumps(parsed, ensure_ascii=False, separators=(",", ":")),
                search_text,
                created,
                created,
            )


def sqlite_url(path: Path) -> str:
    """The URL of the SQLite file at ``path``."""
    return f"sqlite+aiosqlite:///{path}"


async def create_schema(path: Path, *, fts: bool = True) -> None:
    """An SQLite database at ``path`` with Roost's schema (by the migrations: the
    full-text index and the triggers that keep each node's item count), profiles and
    nodes; without the full-text index when ``fts`` is false (a bulk load builds it
    after)."""
    db = await Database.open(sqlite_url(path), check_fulltext=False)
    try:
        if not fts:
            async with db.engine.begin() as conn:
                for ddl in SQLITE_FTS_DROP:
                    await conn.execute(text(ddl))
        await add_profiles_and_nodes(db.engine)
    finally:
        await db.close()


async def create_postgres_schema(url: str) -> None:
    """The PostgreSQL database at ``url`` given Roost's schema (by the migrations, which
    create its generated columns and GIN index), profiles and nodes."""
    db = await Database.open(url)
    try:
        await add_profiles_and_nodes(db.engine)
    finally:
        await db.close()


async def add_profiles_and_nodes(engine: AsyncEngine) -> None:
    """The profiles and the nodes the items are spread over."""
    async with engine.begin() as conn:
        for p in range(1, PROFILES + 1):
            await conn.execute(
                insert(Profile).values(
                    id=p, name=f"p{p}", jid=f"p{p}@example.org", password="", options={}, created=0
                )
            )
        for n in range(1, NODES + 1):
            await conn.execute(
                insert(PubsubNode).values(
                    id=n,
                    profile_id=(n - 1) % PROFILES + 1,
                    service="pubsub.example.org",
                    name=f"node{n}",
                    type="blog",
                    extra={},
                )
            )


def plain_connection(path: Path) -> sqlite3.Connection:
    """An sqlite3 connection set up as Roost's engine sets up its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def plain_load(path: Path, rows: list[tuple[Any, ...]] | Iterator[tuple[Any, ...]]) -> float:
    """Insert rows with one executemany in one transaction; returns the seconds taken."""
    conn = plain_connection(path)
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(ITEM_SQL, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def store_load(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Write the same rows through ItemStore.upsert_items, a batch per call."""
    engine = create_engine(url)
    store = ItemStore(engine)
    batches = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        items = [
            ItemInput(r[1], r[2], r[4], json.loads(r[5]), r[6], r[7]) for r in chunk
        ]  # parsed as the caller holds it: a dict the store serialises
        batches.append((chunk[0][0], items))
    started = time.perf_counter()
    for node_id, items in batches:
        await store.upsert_items(node_id, items)
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed


async def timed(run: Callable[[int], Awaitable[Any]], runs: int) -> tuple[list[float], int]:
    """Milliseconds of ``runs`` calls (after two warm-up calls), and how many of them the
    store stopped at its time budget (those have no time)."""
    for n in range(2):
        with contextlib.suppress(SearchTimeout):
            await run(n)
    times, stopped = [], 0
    for n in range(runs):
        start = time.perf_counter()
        try:
            await run(n)
        except SearchTimeout:
            stopped += 1
            continue
        times.append((time.perf_counter() - start) * 1000)
    return times, stopped


async def items_count(engine: Any) -> int:
    """How many items the database holds."""
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM pubsub_items")) or 0)


async def node_counts(engine: Any) -> dict[int, int]:
    """Each node's items, counted."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT node_id, count(*) FROM pubsub_items GROUP BY node_id")
        )
        return {int(node): int(count) for node, count in rows}


async def search_latency(
    url: str, label: str, database: str, baseline: dict[str, float] | None = None
) -> dict[str, float]:
    """Median and p95 of the searched queries against the database at ``url``; returns
    the medians by query. ``baseline``: another database's medians, shown beside these."""
    engine = create_engine(url)
    items, search = ItemStore(engine), SearchStore(engine)
    await items.ensure_parsed_key_index("author.name")
    sizes: dict[str, int] = {}

    async def fts_selective(_: int) -> None:
        sizes["fts_selective"] = len(await search.search({"fts": "zanzibar", "limit": 100}))

    async def fts_common(_: int) -> None:
        sizes["fts_common"] = len(await search.search({"fts": "harbour", "limit": 100}))

    async def parsed_eq(n: int) -> None:
        query = {"parsed": [{"path": "author.name", "op": "eq", "value": f"user{n * 37}"}]}
        sizes["parsed_eq"] = len(await search.search(query))

    filled_nodes = min(NODES, max(1, await items_count(engine) // BATCH))
    counts = await node_counts(engine)

    async def newest_20(n: int) -> None:
        node = n % filled_nodes + 1
        page = await items.get_items(node, max_items=20)
        # The count a page gives is the node's own (kept by triggers, not counted here).
        if page.count != counts.get(node, 0):
            raise SystemExit(
                f"node {node}: the page says {page.count} items, it has {counts.get(node)}"
            )
        sizes["node_newest_20"] = len(page.items)

    # A frontend scrolling back from the newest items: the page before the 50th newest,
    # its token's place given as the service gives it.
    anchors = {}
    for node in range(1, filled_nodes + 1):
        newest = await items.get_items(node, max_items=50)
        anchors[node] = (newest.items[0].item_id, newest.first_index)

    async def before_20(n: int) -> None:
        node = n % filled_nodes + 1
        anchor, place = anchors[node]
        page = await items.get_items(node, max_items=20, before=anchor, anchor_place=place)
        if (page.first_index, page.count) != (place - 20, counts[node]):
            raise SystemExit(f"node {node}: the page before {anchor} is misplaced")
        sizes["node_before_20"] = len(page.items)

    # The common term reads every match (see docs/performance.md): fewer runs of it.
    cases = [
        ("fts_selective", fts_selective, RUNS),
        ("parsed_eq", parsed_eq, RUNS),
        ("node_newest_20", newest_20, RUNS),
        ("node_before_20", before_20, RUNS),
        ("fts_common", fts_common, RUNS // 4),
    ]
    medians: dict[str, float] = {}
    for name, run, runs in cases:
        times, stopped = await timed(run, runs)
        if stopped:
            # A search stopped at its budget is an answer the caller never got.
            progress(f"{label} {database} {name}: {stopped} of {runs} runs stopped")
            metric = f"search_{name}_{label}_{database}_stopped"
            emit(
                "storage",
                metric,
                stopped,
                "runs",
                at_most=0,
                runs=runs,
                budget_s=SEARCH_TIME_BUDGET,
            )
        if not times:
            continue
        found = spread(times)
        high, value = upper(times)
        medians[name] = found["median"]
        progress(
            f"{label} {database} {name}: median {found['median']:.2f} ms, {high} {value:.2f} ms"
        )
        emit(
            "storage",
            f"search_{name}_{label}_{database}_median",
            found["median"],
            "ms",
            baseline=baseline.get(name) if baseline else None,
            at_most=SEARCH_TARGET_MS.get(name) if label == "1M" else None,
            hits=sizes.get(name),
            samples=len(times),
        )
        emit("storage", f"search_{name}_{label}_{database}_{high}", value, "ms", samples=len(times))
    await engine.dispose()
    return medians


def build_large(path: Path, corpus: Corpus) -> None:
    """SQLite: bulk-load LARGE_ITEMS rows without FTS triggers, then create and rebuild
    the index."""
    asyncio.run(create_schema(path, fts=False))
    start = time.perf_counter()
    plain_load(path, corpus.rows(LARGE_ITEMS))
    progress(f"loaded {LARGE_ITEMS} rows in {time.perf_counter() - start:.0f} s")
    conn = plain_connection(path)
    start = time.perf_counter()
    for ddl in SQLITE_FTS_DDL:
        conn.execute(ddl)
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    conn.close()
    progress(f"rebuilt the FTS index in {time.perf_counter() - start:.0f} s")


async def build_large_postgres(url: str, corpus: Corpus) -> None:
    """PostgreSQL: COPY the same LARGE_ITEMS rows into a migrated database (the server
    keeps the full-text vector and its index as rows arrive), then vacuum and analyse."""
    await create_postgres_schema(url)
    start = time.perf_counter()
    # The text is ASCII: PostgreSQL's indexed form of it (diacritics dropped) is itself.
    copied = await copy_items(url, corpus.rows(LARGE_ITEMS))
    progress(f"copied {copied} rows into PostgreSQL in {time.perf_counter() - start:.0f} s")
    await index_and_analyse(url)


async def index_and_analyse(url: str) -> None:
    """PostgreSQL: the searched key's index (as :func:`search_latency` makes it), then
    vacuum and analyse, as autovacuum would after such a write: the planner's statistics,
    the new expression index's included, and the visibility map."""
    start = time.perf_counter()
    db = await Database.open(url)
    try:
        await db.items.ensure_parsed_key_index("author.name")
    finally:
        await db.close()
    await analyse(url)
    progress(f"indexed, vacuumed and analysed in {time.perf_counter() - start:.0f} s")


def upsert_rates(workdir: Path, rows: list[tuple[Any, ...]], pg_store: str, pg_plain: str) -> Path:
    """Upsert rates into fresh databases of both kinds; returns the SQLite store database."""
    plain_db, store_db = workdir / "plain.sqlite", workdir / "store.sqlite"
    asyncio.run(create_schema(plain_db))
    asyncio.run(create_schema(store_db))
    plain = len(rows) / plain_load(plain_db, rows)
    progress(f"plain sqlite3: {plain:.0f} items/s")
    store = len(rows) / asyncio.run(store_load(sqlite_url(store_db), rows))
    progress(f"ItemStore on SQLite: {store:.0f} items/s")
    plain_db.unlink()
    asyncio.run(create_postgres_schema(pg_plain))
    asyncio.run(create_postgres_schema(pg_store))
    pg_plain_rate = len(rows) / asyncio.run(insert_items(pg_plain, rows))
    progress(f"plain asyncpg: {pg_plain_rate:.0f} items/s")
    pg_rate = len(rows) / asyncio.run(store_load(pg_store, rows))
    progress(f"ItemStore on PostgreSQL: {pg_rate:.0f} items/s")

    emit("storage", "upsert_rate_plain_sqlite3", plain, "items/s")
    emit(
        "storage",
        "upsert_rate_item_store_sqlite",
        store,
        "items/s",
        baseline=plain,
        ratio_at_least=UPSERT_TARGET_RATIO,
    )
    emit("storage", "upsert_rate_plain_asyncpg", pg_plain_rate, "items/s")
    emit(
        "storage",
        "upsert_rate_item_store_postgresql",
        pg_rate,
        "items/s",
        baseline=pg_plain_rate,
        ratio_at_least=UPSERT_TARGET_RATIO,
    )
    emit(
        "storage", "upsert_rate_item_store_postgresql_vs_sqlite", pg_rate, "items/s", baseline=store
    )
    return store_db


def main() -> None:
    """Run every measurement and print the result lines."""
    workdir = Path(tempfile.mkdtemp(prefix="roost-bench-"))
    try:
        with bench_cluster() as cluster:
            progress(f"PostgreSQL cluster up ({settings_text()})")
            corpus = Corpus()
            progress(f"generating {UPSERT_ITEMS} items")
            rows = list(corpus.rows(UPSERT_ITEMS))
            size = (
                sum(len(r[4]) for r in rows) / len(rows),
                sum(len(r[5]) for r in rows) / len(rows),
            )
            progress(f"average XML {size[0]:.0f} B, parsed JSON {size[1]:.0f} B")
            with cluster.database() as pg_store:
                with cluster.database() as pg_plain:
                    store_db = upsert_rates(workdir, rows, pg_store, pg_plain)
                del rows
                label = f"{UPSERT_ITEMS // 1000}k"
                medians = asyncio.run(search_latency(sqlite_url(store_db), label, SQLITE))
                asyncio.run(index_and_analyse(pg_store))
                asyncio.run(search_latency(pg_store, label, POSTGRESQL, medians))
            store_db.unlink()

            label = f"{LARGE_ITEMS // 1_000_000}M" if LARGE_ITEMS >= 1_000_000 else "large"
            large_db = workdir / "large.sqlite"
            build_large(large_db, Corpus(seed=11))
            medians = asyncio.run(search_latency(sqlite_url(large_db), label, SQLITE))
            large_db.unlink()
            with cluster.database() as pg_large:
                asyncio.run(build_large_postgres(pg_large, Corpus(seed=11)))
                asyncio.run(search_latency(pg_large, label, POSTGRESQL, medians))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
