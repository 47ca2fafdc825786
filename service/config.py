"""The daemon's configuration file (TOML).

Every section is optional; an absent file means the defaults. The file's location
defaults to ``$XDG_CONFIG_HOME/roost/roost.toml``. A malformed file raises
:class:`ConfigError` whose message is the one line the daemon prints before exiting.

.. code-block:: toml

    [database]
    url = "sqlite:///home/me/.local/share/roost/roost.sqlite"

    [logging]
    level = "info"

    [cache]
    max_items_per_node = 5000
    prefetch = true            # contacts' nodes an analyser marks prefetch, synced at login
    prefetch_max_nodes = 200   # at most this many per profile and run of the daemon
    min_free_disk_mb = 200     # syncs pause while the database's disk has less free
    [[cache.rules]]
    name = "events"
    node = "urn:xmpp:events:0"
    type = "event"
    to_sync = true
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.errors import InvalidArgument

APP_NAME = "roost"
DEFAULT_MAX_ITEMS_PER_NODE = 5000
DEFAULT_PREFETCH_MAX_NODES = 200
DEFAULT_MIN_FREE_DISK_MB = 200
DEFAULT_REQUEST_TIMEOUT = 60.0
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the fault."""


@dataclass(frozen=True)
class Config:
    """The daemon's settings, defaults filled in.

    ``cache_rules`` are kept as the raw tables of ``[[cache.rules]]``: the analyser
    registry validates them, since it alone knows what a rule may hold.
    """

    path: Path | None = None
    database_url: str | None = None
    log_level: str = "info"
    max_items_per_node: int = DEFAULT_MAX_ITEMS_PER_NODE
    prefetch: bool = True
    prefetch_max_nodes: int = DEFAULT_PREFETCH_MAX_NODES
    min_free_disk_mb: int = DEFAULT_MIN_FREE_DISK_MB
    cache_rules: list[dict[str, Any]] = field(default_factory=list)
    # Seconds a request to the XMPP server may go unanswered ([xmpp] request_timeout).
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    @property
    def logging_level(self) -> int:
        """The level as the :mod:`logging` module numbers it."""
        return int(getattr(logging, self.log_level.upper()))


def default_config_path() -> Path:
    """Where the configuration file is looked for when none is given."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "roost.toml"


def load_config(path: Path | None = None) -> Config:
    """Read the configuration at ``path`` (default: :func:`default_config_path`).

    A missing default file gives the defaults; a missing file named explicitly, or
    one that does not parse or holds wrong values, raises :class:`ConfigError`.
    """
    explicit = path is not None
    path = path if path is not None else default_config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        return Config()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return _parse(path, data)


def _table(path: Path, data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return table


def _check_keys(path: Path, section: str, table: dict[str, Any], known: set[str]) -> None:
    # A misspelt key silently ignored is a setting the user believes in but never gets.
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} in [{section}]")


def _parse(path: Path, data: dict[str, Any]) -> Config:
    unknown = sorted(set(data) - {"database", "logging", "cache", "xmpp"})
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]")

    database = _table(path, data, "database")
    _check_keys(path, "database", database, {"url"})
    url = database.get("url")
    if url is not None and (not isinstance(url, str) or not url):
        raise ConfigError(f"{path}: [database] url must be a non-empty string")

    logging_table = _table(path, data, "logging")
    _check_keys(path, "logging", logging_table, {"level"})
    level = logging_table.get("level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(f"{path}: [logging] level must be one of {', '.join(LOG_LEVELS)}")

    cache = _table(path, data, "cache")
    _check_keys(
        path,
        "cache",
        cache,
        {"max_items_per_node", "rules", "prefetch", "prefetch_max_nodes", "min_free_disk_mb"},
    )
    max_items = cache.get("max_items_per_node", DEFAULT_MAX_ITEMS_PER_NODE)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ConfigError(f"{path}: [cache] max_items_per_node must be a positive integer")
    prefetch = cache.get("prefetch", True)
    if not isinstance(prefetch, bool):
        raise ConfigError(f"{path}: [cache] prefetch must be true or false")
    prefetch_max = cache.get("prefetch_max_nodes", DEFAULT_PREFETCH_MAX_NODES)
    if isinstance(prefetch_max, bool) or not isinstance(prefetch_max, int) or prefetch_max < 0:
        raise ConfigError(f"{path}: [cache] prefetch_max_nodes must be a number, 0 or more")
    min_free = cache.get("min_free_disk_mb", DEFAULT_MIN_FREE_DISK_MB)
    if isinstance(min_free, bool) or not isinstance(min_free, int) or min_free < 0:
        raise ConfigError(f"{path}: [cache] min_free_disk_mb must be a number, 0 or more")
    rules = cache.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise ConfigError(f"{path}: [cache] rules must be an array of tables ([[cache.rules]])")
    try:
        # Checked here, so that a bad rule is reported as the config error it is.
        AnalyserRegistry(builtins=False).load_config_rules(rules)
    except InvalidArgument as err:
        raise ConfigError(f"{path}: [[cache.rules]]: {err.message}") from None

    xmpp = _table(path, data, "xmpp")
    _check_keys(path, "xmpp", xmpp, {"request_timeout"})
    request_timeout = xmpp.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)
    if (
        isinstance(request_timeout, bool)
        or not isinstance(request_timeout, int | float)
        or not 0 < request_timeout <= 3600
    ):
        raise ConfigError(
            f"{path}: [xmpp] request_timeout must be seconds, above 0 and at most 3600"
        )

    return Config(
        path=path,
        database_url=url,
        log_level=level.lower(),
        max_items_per_node=max_items,
        prefetch=prefetch,
        prefetch_max_nodes=prefetch_max,
        min_free_disk_mb=min_free,
        cache_rules=[dict(rule) for rule in rules],
        request_timeout=float(request_timeout),
    )
