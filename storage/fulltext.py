"""The SQLite full-text index's DDL, for tools that take it down and put it back.

SQLite: an FTS5 table with external content (``pubsub_items.search_text``), kept in step
by triggers, so that FTS5's own ``integrity-check`` and ``rebuild`` work against the
content table (see :mod:`roost.storage.engines.sqlite`). PostgreSQL keeps a generated
``tsvector`` column instead (see :mod:`roost.storage.engines.postgres`). The DDL is
written out in the migrations as well: a migration must keep creating what it created
when it was written, whatever this module becomes.
"""

from __future__ import annotations

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
