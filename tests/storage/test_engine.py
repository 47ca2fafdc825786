"""Engine set-up: URL resolution and SQLite file modes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from roost.storage.engine import create_engine, resolve_database_url
from roost.storage.engines import UnsupportedDatabase


def test_plain_urls_get_async_drivers() -> None:
    assert resolve_database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert resolve_database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert resolve_database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    psycopg2 = resolve_database_url("postgresql+psycopg2://u@h/db")
    assert psycopg2.drivername == "postgresql+asyncpg"


def test_other_databases_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedDatabase, match=r"SQLite and PostgreSQL.*'mysql'"):
        resolve_database_url("mysql://u@h/db")


def test_environment_url_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_database_url().database == "from-env.db"


def test_environment_url_wins_over_the_config_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_database_url(from_config="sqlite:///file.db").database == "from-env.db"
    assert resolve_database_url(
        "sqlite:///option.db", from_config="sqlite:///file.db"
    ).database == ("option.db")
    monkeypatch.delenv("ROOST_DATABASE_URL")
    assert resolve_database_url(from_config="sqlite:///file.db").database == "file.db"


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "roost.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    async with engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    await engine.dispose()
    assert mode == "wal"
    assert fks == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
