"""Engine set-up: where the database is, and how each dialect is configured.

Everything dialect-specific about connections lives here (SQLite pragmas, file modes);
the stores above stay dialect-neutral except where :mod:`roost.storage.dialect` says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

APP_NAME = "roost"
DATABASE_URL_ENV = "ROOST_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def default_database_path() -> Path:
    """The SQLite file used when no URL is configured, under the XDG data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "roost.sqlite"


def resolve_database_url(configured: str | None = None) -> URL:
    """Pick the database URL: an explicit one, then ``ROOST_DATABASE_URL``, then the default.

    Plain ``sqlite:///`` and ``postgresql://`` URLs are given their async drivers
    (aiosqlite, asyncpg), so users can write the URL they know.
    """
    raw = configured or os.environ.get(DATABASE_URL_ENV) or ""
    url = make_url(raw) if raw else make_url(f"sqlite:///{default_database_path()}")
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    return url


def is_sqlite(url: URL) -> bool:
    """True when the URL names an SQLite database."""
    return url.get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite URL, or None for an in-memory database."""
    if not is_sqlite(url) or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) before SQLite opens it.

    The database holds account passwords: only its owner may read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    path.chmod(0o600)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; the busy timeout turns writer
    # contention into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: URL | str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` with Roost's per-dialect settings."""
    url = resolve_database_url(str(url)) if isinstance(url, str) else url
    # A database error's text would otherwise carry the statement's bound values (item
    # XML, a profile's password) into log lines and sync reasons.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        path = sqlite_file(url)
        if path is not None:
            prepare_sqlite_file(path)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)
