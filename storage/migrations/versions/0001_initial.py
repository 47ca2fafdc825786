"""The initial schema: profiles, params, key/value store, pubsub nodes and items, FTS.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:01:41

The SQLite full-text index is written out here rather than taken from
roost.storage.fulltext: this revision must keep creating what it created when it was
written, whatever that module becomes. On PostgreSQL, JSON columns are JSONB but for
an item's ``parsed``, kept as JSON text (given back exactly as written) with a generated
JSONB copy (``parsed_doc``) for searches, and the full-text index is a generated
``tsvector`` column with a GIN index (added with the PostgreSQL support: before it, a
PostgreSQL database could be created but not used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_FTS = (
    """CREATE VIRTUAL TABLE pubsub_items_fts USING fts5(
        search_text, content='pubsub_items', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER pubsub_items_fts_insert AFTER INSERT ON pubsub_items BEGIN
        INSERT INTO pubsub_items_fts(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    """CREATE TRIGGER pubsub_items_fts_delete AFTER DELETE ON pubsub_items BEGIN
        INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
    END""",
    """CREATE TRIGGER pubsub_items_fts_update AFTER UPDATE OF search_text ON pubsub_items
    BEGIN
        INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
        INSERT INTO pubsub_items_fts(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
)

POSTGRESQL_DERIVED = (
    """ALTER TABLE pubsub_items ADD COLUMN search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED""",
    "CREATE INDEX ix_pubsub_items_search_vector ON pubsub_items USING gin (search_vector)",
    # The parsed data as JSONB for searches; ``parsed`` itself keeps the exact text.
    """ALTER TABLE pubsub_items ADD COLUMN parsed_doc jsonb
        GENERATED ALWAYS AS (parsed::jsonb) STORED""",
)

SQLITE_FTS_DROP = (
    "DROP TRIGGER IF EXISTS pubsub_items_fts_update",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_delete",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_insert",
    "DROP TABLE IF EXISTS pubsub_items_fts",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _profile_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["profile_id"],
        ["profiles.id"],
        name=op.f(f"fk_{table}_profile_id_profiles"),
        ondelete="CASCADE",
    )


def _scoped_unique_indexes(table: str, columns: list[str]) -> None:
    # A NULL profile_id means "global"; NULLs never collide in a unique index, so the
    # global and per-profile rows each get a partial index of their own.
    op.create_index(
        f"uq_{table}_global",
        table,
        columns,
        unique=True,
        sqlite_where=sa.text("profile_id IS NULL"),
        postgresql_where=sa.text("profile_id IS NULL"),
    )
    op.create_index(
        f"uq_{table}_profile",
        table,
        ["profile_id", *columns],
        unique=True,
        sqlite_where=sa.text("profile_id IS NOT NULL"),
        postgresql_where=sa.text("profile_id IS NOT NULL"),
    )


def upgrade() -> None:
    """Create every table, index and the full-text index (FTS5 and its triggers on
    SQLite, a generated column on PostgreSQL)."""
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("jid", sa.String(length=3071), nullable=False),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("options", _json(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
        sa.UniqueConstraint("name", name=op.f("uq_profiles_name")),
    )
    op.create_table(
        "kv_store",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=True),
        sa.Column("namespace", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value_type", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _profile_fk("kv_store"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kv_store")),
    )
    _scoped_unique_indexes("kv_store", ["namespace", "key"])
    op.create_table(
        "params",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _profile_fk("params"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_params")),
    )
    _scoped_unique_indexes("params", ["category", "name"])
    op.create_table(
        "pubsub_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=3071), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("analyser", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("subtype", sa.String(length=255), nullable=True),
        sa.Column("sync_state", sa.String(length=16), nullable=False),
        sa.Column("sync_state_updated", sa.Float(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("extra", _json(), nullable=False),
        _profile_fk("pubsub_nodes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_nodes")),
        sa.UniqueConstraint(
            "profile_id", "service", "name", name=op.f("uq_pubsub_nodes_profile_id")
        ),
    )
    op.create_index(op.f("ix_pubsub_nodes_sync_state"), "pubsub_nodes", ["sync_state"])
    op.create_index(op.f("ix_pubsub_nodes_type"), "pubsub_nodes", ["type"])
    op.create_table(
        "pubsub_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=1024), nullable=False),
        sa.Column("publisher", sa.String(length=3071), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("parsed", sa.JSON(), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_nodes.id"],
            name=op.f("fk_pubsub_items_node_id_pubsub_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_items")),
        sa.UniqueConstraint("node_id", "item_id", name=op.f("uq_pubsub_items_node_id")),
    )
    op.create_index("ix_pubsub_items_created", "pubsub_items", ["created"])
    op.create_index("ix_pubsub_items_node_position", "pubsub_items", ["node_id", "position"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_FTS, "postgresql": POSTGRESQL_DERIVED}.get(dialect, ()):
        op.execute(statement)


def downgrade() -> None:
    """Drop everything 0001 created."""
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS_DROP:
            op.execute(statement)
    op.drop_index("ix_pubsub_items_node_position", table_name="pubsub_items")
    op.drop_index("ix_pubsub_items_created", table_name="pubsub_items")
    op.drop_table("pubsub_items")
    op.drop_index(op.f("ix_pubsub_nodes_type"), table_name="pubsub_nodes")
    op.drop_index(op.f("ix_pubsub_nodes_sync_state"), table_name="pubsub_nodes")
    op.drop_table("pubsub_nodes")
    for table in ("params", "kv_store"):
        op.drop_index(f"uq_{table}_profile", table_name=table)
        op.drop_index(f"uq_{table}_global", table_name=table)
        op.drop_table(table)
    op.drop_table("profiles")
