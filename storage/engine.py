"""Where the database is, and the async engine on it.

Which URL: an explicit one (``roostd --database``), then ``ROOST_DATABASE_URL``, then the
configuration file's, else an SQLite file under the XDG data directory. How each
database's connections are set up is its engine's business (:mod:`roost.storage.engines`).
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


def resolve_database_url(explicit: str | None = None, *, from_config: str | None = None) -> URL:
    """Pick the database URL: ``explicit``, then ``ROOST_DATABASE_URL``, then
    ``from_config``, then the default SQLite file.

    The environment wins over the configuration file, as is usual: a unit's
    ``Environment=`` or a shell's export points one run of the daemon elsewhere without
    editing the file every run shares.

    Args:
        explicit: the URL given on the command line, if any.
        from_config: the configuration file's ``[database] url``, if any.

    Plain ``sqlite:///`` and ``postgresql://`` URLs are given their async drivers
    (aiosqlite, asyncpg), so users can write the URL they know.

    Raises:
        UnsupportedDatabase: the URL names a database other than SQLite and PostgreSQL.

    .. versionchanged:: ``from_config`` comes after ``ROOST_DATABASE_URL``; the daemon
       used to give the configuration file's URL precedence over the environment.
    """
    raw = explicit or os.environ.get(DATABASE_URL_ENV) or from_config or ""
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
