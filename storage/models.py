"""The ORM mapping of Roost's tables.

The Alembic migrations are the source of truth for the schema in a database; this mapping
must describe the same schema (a test compares the two with autogenerate). The full-text
index is not mapped: it is dialect-specific DDL (an FTS5 table on SQLite, a generated
``search_vector`` column on PostgreSQL), see :mod:`roost.storage.engines`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: JSON data: JSONB on PostgreSQL (indexable, compared by value), JSON text on SQLite.
#: An item's ``parsed`` is plain JSON on both: its text is given back exactly as written
#: (PostgreSQL keeps a JSONB copy beside it for searches, see roost.storage.engines).
JsonData = JSON().with_variant(JSONB(), "postgresql")

# Stable constraint names, so that migrations can refer to them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every mapped table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JsonData}


class Profile(Base):
    """An XMPP account the daemon keeps.

    ``options`` holds the connection overrides (host, port, tls, autoconnect).
    """

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    jid: Mapped[str] = mapped_column(String(3071))
    password: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JsonData, default=dict)
    created: Mapped[float] = mapped_column(Float)

    nodes: Mapped[list[PubsubNode]] = relationship(
        back_populates="profile", cascade="all, delete-orphan", passive_deletes=True
    )


class Param(Base):
    """A frontend or plugin parameter: global when ``profile_id`` is NULL."""

    __tablename__ = "params"
    __table_args__ = (
        Index(
            "uq_params_global",
            "category",
            "name",
            unique=True,
            sqlite_where=text("profile_id IS NULL"),
            postgresql_where=text("profile_id IS NULL"),
        ),
        Index(
            "uq_params_profile",
            "profile_id",
            "category",
            "name",
            unique=True,
            sqlite_where=text("profile_id IS NOT NULL"),
            postgresql_where=text("profile_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), nullable=True
    )
    category: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)


class StoredValue(Base):
    """A namespaced key/value entry: global when ``profile_id`` is NULL.

    ``value_type`` is the caller's type tag (the D-Bus signature for the D-Bus bridge) and
    ``value`` its JSON encoding, so that a value round-trips with its type.
    """

    __tablename__ = "kv_store"
    __table_args__ = (
        Index(
            "uq_kv_store_global",
            "namespace",
            "key",
            unique=True,
            sqlite_where=text("profile_id IS NULL"),
            postgresql_where=text("profile_id IS NULL"),
        ),
        Index(
            "uq_kv_store_profile",
            "profile_id",
            "namespace",
            "key",
            unique=True,
            sqlite_where=text("profile_id IS NOT NULL"),
            postgresql_where=text("profile_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), nullable=True
    )
    namespace: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    value_type: Mapped[str] = mapped_column(String(255))
    # JSON text in a TEXT column, encoded by the store: a JSON column has NUMERIC
    # affinity on SQLite, which turns a scalar like 18446744073709551615 into a lossy REAL.
    value: Mapped[str] = mapped_column(Text)


class PubsubNode(Base):
    """A pubsub node known to the cache, with its analysis and sync state.

    ``sync_state`` is one of ``none``, ``no_sync``, ``in_progress``, ``completed``,
    ``error``; ``sync_state_updated`` is when it last changed (seconds since the epoch).
    ``subscribed`` says whether Roost holds a subscription (or PEP notifications) that
    keeps the node current. ``extra`` keeps what else the service layer needs (the reason
    of an ``error`` or ``no_sync``, retry counters…).
    """

    __tablename__ = "pubsub_nodes"
    __table_args__ = (UniqueConstraint("profile_id", "service", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str] = mapped_column(String(1024))
    analyser: Mapped[str | None] = mapped_column(String(255), nullable=True)
    type: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    subtype: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sync_state: Mapped[str] = mapped_column(String(16), default="none", index=True)
    sync_state_updated: Mapped[float] = mapped_column(Float, default=0.0)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    extra: Mapped[dict[str, Any]] = mapped_column(JsonData, default=dict)
    # Kept by triggers on pubsub_items (migration 0003), never written by the stores.
    item_count: Mapped[int] = mapped_column(Integer, server_default="0")

    profile: Mapped[Profile] = relationship(back_populates="nodes")


class PubsubItem(Base):
    """A cached pubsub item.

    ``position`` orders a node's items as the server does (oldest first): it grows with
    each publication, so a republished item moves to the end as it does on the servers.
    ``data`` is the ``<item>`` element as a query returns it; ``parsed`` is the
    analyser's parser output or NULL; ``search_text`` is the text the full-text index
    covers (the parsed data's strings, else the XML's text content, never tag names).
    """

    __tablename__ = "pubsub_items"
    __table_args__ = (
        UniqueConstraint("node_id", "item_id"),
        Index("ix_pubsub_items_node_position", "node_id", "position"),
        Index("ix_pubsub_items_created", "created"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("pubsub_nodes.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(1024))
    publisher: Mapped[str] = mapped_column(String(3071), default="")
    position: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    parsed: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    search_text: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class Roster(Base):
    """What is known of a profile's roster as a whole (its items are :class:`RosterItem`).

    ``version`` is the roster version (XEP-0237) last received, sent back at the next
    session start so that the server sends only the changes; NULL when the server gave
    none, and then the whole roster is asked for again.
    """

    __tablename__ = "rosters"

    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str | None] = mapped_column(Text, nullable=True)


class RosterItem(Base):
    """A contact in a profile's roster, as the server last described it.

    ``groups`` is a JSON list of group names; ``subscription`` is one of ``none``, ``to``,
    ``from``, ``both``; ``pending_out`` says the profile asked for the contact's presence
    and no answer came yet; ``updated`` is when the row was last written.
    """

    __tablename__ = "roster_items"
    __table_args__ = (UniqueConstraint("profile_id", "jid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    jid: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str] = mapped_column(String(1023), default="")
    groups: Mapped[list[str]] = mapped_column(JsonData, default=list)
    subscription: Mapped[str] = mapped_column(String(8), default="none")
    pending_out: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[float] = mapped_column(Float)


class SubscriptionRequest(Base):
    """Someone asks to see a profile's presence and waits for the account's answer.

    ``message`` is the requester's text (may be empty); ``received`` is when the first
    request from that JID arrived (seconds since the epoch).
    """

    __tablename__ = "subscription_requests"
    __table_args__ = (UniqueConstraint("profile_id", "jid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    jid: Mapped[str] = mapped_column(String(3071))
    message: Mapped[str] = mapped_column(Text, default="")
    received: Mapped[float] = mapped_column(Float)


class CacheSubscription(Base):
    """A pubsub subscription the cache made for itself, to keep a node current.

    Kept apart from the subscriptions a user makes through a frontend, so that the cache
    only ever undoes its own. ``subid`` is the server's subscription id, empty when it
    gave none; ``created`` is when the cache first recorded a subscription to the node.
    """

    __tablename__ = "cache_subscriptions"
    __table_args__ = (UniqueConstraint("profile_id", "service", "node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(3071))
    node: Mapped[str] = mapped_column(String(1024))
    subid: Mapped[str] = mapped_column(String(1024), default="")
    created: Mapped[float] = mapped_column(Float)
