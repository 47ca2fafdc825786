"""Contacts: rosters and their items, pending subscription requests, cache subscriptions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 14:55:24

New tables only: no existing table is altered, so nothing here goes through batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _profile_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["profile_id"],
        ["profiles.id"],
        name=op.f(f"fk_{table}_profile_id_profiles"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create rosters, roster_items, subscription_requests and cache_subscriptions."""
    op.create_table(
        "rosters",
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        _profile_fk("rosters"),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_rosters")),
    )
    op.create_table(
        "roster_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=3071), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=False),
        sa.Column(
            "groups", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("subscription", sa.String(length=8), nullable=False),
        sa.Column("pending_out", sa.Boolean(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        _profile_fk("roster_items"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_items")),
        sa.UniqueConstraint("profile_id", "jid", name=op.f("uq_roster_items_profile_id")),
    )
    op.create_table(
        "subscription_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=3071), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("received", sa.Float(), nullable=False),
        _profile_fk("subscription_requests"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_requests")),
        sa.UniqueConstraint("profile_id", "jid", name=op.f("uq_subscription_requests_profile_id")),
    )
    op.create_table(
        "cache_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=3071), nullable=False),
        sa.Column("node", sa.String(length=1024), nullable=False),
        sa.Column("subid", sa.String(length=1024), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        _profile_fk("cache_subscriptions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_subscriptions")),
        sa.UniqueConstraint(
            "profile_id", "service", "node", name=op.f("uq_cache_subscriptions_profile_id")
        ),
    )


def downgrade() -> None:
    """Drop the four tables 0002 created, with their rows."""
    op.drop_table("cache_subscriptions")
    op.drop_table("subscription_requests")
    op.drop_table("roster_items")
    op.drop_table("rosters")
