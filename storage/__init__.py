"""Roost's storage layer: the schema, its migrations, and the async stores over it.

Open the database with :meth:`Database.open`; reach each concern through the facade
(``db.profiles``, ``db.params``, ``db.values``, ``db.nodes``, ``db.items``,
``db.search``, ``db.roster``, ``db.cache_subscriptions``). Nothing outside this package
touches the database directly.
"""

from roost.storage.database import Database
from roost.storage.engine import default_database_path, resolve_database_url
from roost.storage.errors import (
    AlreadyExists,
    DatabaseTooNew,
    InvalidQuery,
    RowNotFound,
    StorageError,
)
from roost.storage.item_records import ItemBatch, ItemInput, ItemPage, ItemRecord, SearchHit
from roost.storage.items import ItemStore
from roost.storage.migrate import MigrationOutcome, UnmanagedDatabase, prepare_database
from roost.storage.nodes import NodeStore
from roost.storage.params import ParamStore
from roost.storage.profiles import ProfileStore
from roost.storage.records import (
    NODE_STATES,
    ROSTER_SUBSCRIPTIONS,
    CacheSubscriptionRecord,
    NodeRecord,
    ProfileRecord,
    RosterChange,
    RosterEntry,
    RosterRemoval,
    SubscriptionRequestRecord,
    TypedValue,
)
from roost.storage.roster import CacheSubscriptionStore, RosterStore
from roost.storage.search import SearchQuery, SearchStore
from roost.storage.values import ValueStore

__all__ = [
    "NODE_STATES",
    "ROSTER_SUBSCRIPTIONS",
    "AlreadyExists",
    "CacheSubscriptionRecord",
    "CacheSubscriptionStore",
    "Database",
    "DatabaseTooNew",
    "InvalidQuery",
    "ItemBatch",
    "ItemInput",
    "ItemPage",
    "ItemRecord",
    "ItemStore",
    "MigrationOutcome",
    "NodeRecord",
    "NodeStore",
    "ParamStore",
    "ProfileRecord",
    "ProfileStore",
    "RosterChange",
    "RosterEntry",
    "RosterRemoval",
    "RosterStore",
    "RowNotFound",
    "SearchHit",
    "SearchQuery",
    "SearchStore",
    "StorageError",
    "SubscriptionRequestRecord",
    "TypedValue",
    "UnmanagedDatabase",
    "ValueStore",
    "default_database_path",
    "prepare_database",
    "resolve_database_url",
]
