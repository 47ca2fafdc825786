"""Shared fixtures: each real part (bus, servers, database) has its module in fixtures/."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.dbus",
    "tests.fixtures.xmpp",
    "tests.fixtures.postgres",
    "tests.fixtures.sessions",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run a test that takes both an XMPP server and a database once per server on
    SQLite, and on PostgreSQL against ejabberd only.

    The database's part of such a test (the cache's reads and writes) is the same
    whichever server fed it, and every PostgreSQL run costs the suite's time budget; the
    servers' differences are covered on SQLite.
    """
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("database_url") == "postgresql" and params.get("xmpp_server") == "prosody":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
