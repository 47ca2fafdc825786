"""Where the database is, and the async engine on it.

Which URL: an explicit one, ``ROOST_DATABASE_URL``, else an SQLite file under the XDG
data directory. How each database's connections are set up is its engine's business
(:mod:`roost.storage.engines`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.engines import engine_for

APP_NAME = "roost"
DATABASE_URL_ENV = "ROOST_DATABASE_URL"


def default_database_path() -> Path:
    """The SQLite file used when no URL is configured, under the XDG data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "roost.sqlite"


def resolve_database_url(configured: str | None = None) -> URL:
    """Pick the database URL: an explicit one, then ``ROOST_DATABASE_URL``, then the default.

    Plain ``sqlite:///`` and ``postgresql://`` URLs are given their async drivers
    (aiosqlite, asyncpg), so users can write the URL they know.

    Raises:
        UnsupportedDatabase: the URL names a database other than SQLite and PostgreSQL.
    """
    raw = configured or os.environ.get(DATABASE_URL_ENV) or ""
    url = make_url(raw) if raw else make_url(f"sqlite:///{default_database_path()}")
    return engine_for(url).async_url(url)


def database_file(url: URL) -> Path | None:
    """The local file holding the database at ``url`` (an SQLite file), else None."""
    return engine_for(url).database_file(url)


def create_engine(url: URL | str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` with its database's connection settings.

    Raises:
        UnsupportedDatabase: the URL names a database other than SQLite and PostgreSQL.
    """
    url = resolve_database_url(str(url)) if isinstance(url, str) else url
    # A database error's text would otherwise carry the statement's bound values (item
    # XML, a profile's password) into log lines and sync reasons.
    kwargs.setdefault("hide_parameters", True)
    return engine_for(url).create_async_engine(url, **kwargs)
