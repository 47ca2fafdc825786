"""Each node's item count, kept with the node by triggers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 06:20:00

A page of a node's items says how many items the node holds (RSM's count). Counting
them on every read walked the node's index: about 30 µs at 1,000 items, 3 ms at 100,000,
on every page. ``pubsub_nodes.item_count`` holds the count instead, kept by triggers on
``pubsub_items`` in the very transaction that adds or removes an item, so that a read
sees the count of the rows it sees. SQLite's triggers run a row at a time; PostgreSQL's
run once a statement over its transition table (one update of the node for a batch of
a thousand items, not a thousand row versions of it). An upsert that updates an item
fires no insert trigger: only rows added or removed are counted. An item never moves to
another node (nothing updates ``node_id``), so updates need no trigger: one on every
update would make PostgreSQL keep a copy of each rewritten item for it.

Existing nodes are counted once, here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_TRIGGERS = (
    """CREATE TRIGGER pubsub_items_count_insert AFTER INSERT ON pubsub_items BEGIN
  UPDATE pubsub_nodes SET item_count = item_count + 1 WHERE id = new.node_id;
END""",
    """CREATE TRIGGER pubsub_items_count_delete AFTER DELETE ON pubsub_items BEGIN
  UPDATE pubsub_nodes SET item_count = item_count - 1 WHERE id = old.node_id;
END""",
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS pubsub_items_count_delete",
    "DROP TRIGGER IF EXISTS pubsub_items_count_insert",
)

POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION pubsub_items_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE pubsub_nodes AS n SET item_count = n.item_count + added.items
  FROM (SELECT node_id, count(*) AS items FROM added_rows GROUP BY node_id) AS added
  WHERE n.id = added.node_id;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION pubsub_items_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE pubsub_nodes AS n SET item_count = n.item_count - removed.items
  FROM (SELECT node_id, count(*) AS items FROM removed_rows GROUP BY node_id) AS removed
  WHERE n.id = removed.node_id;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER pubsub_items_count_insert AFTER INSERT ON pubsub_items
REFERENCING NEW TABLE AS added_rows
FOR EACH STATEMENT EXECUTE FUNCTION pubsub_items_count_added()""",
    """CREATE TRIGGER pubsub_items_count_delete AFTER DELETE ON pubsub_items
REFERENCING OLD TABLE AS removed_rows
FOR EACH STATEMENT EXECUTE FUNCTION pubsub_items_count_removed()""",
)
POSTGRESQL_DROP = (
    "DROP TRIGGER IF EXISTS pubsub_items_count_delete ON pubsub_items",
    "DROP TRIGGER IF EXISTS pubsub_items_count_insert ON pubsub_items",
    "DROP FUNCTION IF EXISTS pubsub_items_count_removed()",
    "DROP FUNCTION IF EXISTS pubsub_items_count_added()",
)

COUNT_EXISTING = """UPDATE pubsub_nodes SET item_count =
  (SELECT count(*) FROM pubsub_items WHERE pubsub_items.node_id = pubsub_nodes.id)"""


def upgrade() -> None:
    """Add ``pubsub_nodes.item_count``, count every node, and keep it by triggers."""
    op.add_column(
        "pubsub_nodes",
        sa.Column("item_count", sa.Integer(), server_default="0", nullable=False),
    )
    op.execute(COUNT_EXISTING)
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS}.get(
        dialect, ()
    ):
        op.execute(statement)


def downgrade() -> None:
    """Drop the triggers and the column."""
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP}.get(dialect, ()):
        op.execute(statement)
    # SQLite drops a column in place (3.35 and later): no copy of the table.
    op.drop_column("pubsub_nodes", "item_count")
