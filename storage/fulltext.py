"""The full-text index over cached items, per dialect.

SQLite: an FTS5 table with external content (``pubsub_items.search_text``), kept in step
by triggers, so that FTS5's own ``integrity-check`` and ``rebuild`` work against the
content table. PostgreSQL: a generated ``tsvector`` column with a GIN index (added with
the PostgreSQL support). The DDL is written out in the migrations as well: a migration
must keep creating what it created when it was written, whatever this module becomes.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

FTS_TABLE = "pubsub_items_fts"

SQLITE_FTS_DDL = (
    f"""CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(
        search_text, content='pubsub_items', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER pubsub_items_fts_insert AFTER INSERT ON pubsub_items BEGIN
        INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    f"""CREATE TRIGGER pubsub_items_fts_delete AFTER DELETE ON pubsub_items BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
    END""",
    f"""CREATE TRIGGER pubsub_items_fts_update AFTER UPDATE OF search_text ON pubsub_items
    BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
        INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
)

SQLITE_FTS_DROP = (
    "DROP TRIGGER IF EXISTS pubsub_items_fts_update",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_delete",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_insert",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
)


async def sqlite_fts_is_consistent(conn: AsyncConnection) -> bool:
    """Run FTS5's integrity check against the content table.

    Returns False when the index has drifted from ``pubsub_items`` (a crash between the
    two writes, a manual edit), True when it is in step.
    """
    try:
        await conn.execute(
            text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
        )
    except Exception as exc:  # sqlite reports drift as SQLITE_CORRUPT_VTAB
        if "malformed" in str(exc) or "corrupt" in str(exc).lower():
            return False
        raise
    return True


async def sqlite_fts_rebuild(conn: AsyncConnection) -> None:
    """Rebuild the FTS index from the content table."""
    await conn.execute(text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"))
