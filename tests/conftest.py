"""Shared fixtures: each real part (bus, servers, database) has its module in fixtures/."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.dbus",
    "tests.fixtures.xmpp",
    "tests.fixtures.postgres",
    "tests.fixtures.sessions",
]
