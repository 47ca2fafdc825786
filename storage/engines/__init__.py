"""Database engines: one per dialect, with everything that differs between them.

:func:`engine_for` picks the engine of a URL, an async engine or a connection; the
stores ask it for their dialect-specific SQL and capabilities (see
:class:`~roost.storage.engines.base.DatabaseEngine`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from roost.storage.engines.base import DatabaseEngine, JsonKind, JsonPath, path_label
from roost.storage.engines.postgres import PostgresEngine
from roost.storage.engines.sqlite import SqliteEngine
from roost.storage.errors import StorageError

__all__ = [
    "DatabaseEngine",
    "JsonKind",
    "JsonPath",
    "PostgresEngine",
    "SqliteEngine",
    "UnsupportedDatabase",
    "engine_for",
    "path_label",
]

_POSTGRESQL = PostgresEngine()
# "postgres" is the scheme many tools write (libpq takes both).
_ENGINES: dict[str, DatabaseEngine] = {
    "sqlite": SqliteEngine(),
    "postgresql": _POSTGRESQL,
    "postgres": _POSTGRESQL,
}


class UnsupportedDatabase(StorageError, ValueError):
    """A database URL names a database Roost does not run on."""


def engine_for(bind: Any) -> DatabaseEngine:
    """The engine of ``bind``: a URL, or anything with a ``dialect`` (an engine, a
    connection).

    Raises:
        UnsupportedDatabase: for a database other than SQLite and PostgreSQL.
    """
    name = bind.drivername.partition("+")[0] if isinstance(bind, URL) else bind.dialect.name
    try:
        return _ENGINES[name]
    except KeyError:
        raise UnsupportedDatabase(
            f"Roost runs on SQLite and PostgreSQL databases, not {name!r}"
        ) from None
