"""The TOML configuration: defaults, every key, and one clear line for a bad file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from roost.service.config import Config, ConfigError, default_config_path, load_config

EXAMPLE = Path(__file__).parents[2] / "data" / "roost.toml.example"


def test_no_file_at_the_default_place_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "roost" / "roost.toml"
    config = load_config()
    assert config == Config()
    assert config.max_items_per_node == 5000
    assert config.logging_level == logging.INFO


def test_every_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(
        """
[database]
url = "sqlite:///x.sqlite"
[logging]
level = "DEBUG"
[cache]
max_items_per_node = 20
[xmpp]
request_timeout = 7.5
[[cache.rules]]
name = "blog"
node = "urn:xmpp:microblog:0"
to_sync = true
"""
    )
    config = load_config(path)
    assert config.database_url == "sqlite:///x.sqlite"
    assert config.log_level == "debug"
    assert config.logging_level == logging.DEBUG
    assert config.max_items_per_node == 20
    assert config.request_timeout == 7.5
    assert config.cache_rules == [{"name": "blog", "node": "urn:xmpp:microblog:0", "to_sync": True}]


def test_the_example_file_loads(tmp_path: Path) -> None:
    copy = tmp_path / "roost.toml"
    shutil.copy(EXAMPLE, copy)
    assert load_config(copy).max_items_per_node == 5000


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[database\n", "not valid TOML"),
        ("[databse]\nurl='x'", "unknown section [databse]"),
        ("[database]\nuri='x'", "unknown key 'uri' in [database]"),
        ("[database]\nurl=''", "url must be a non-empty string"),
        ("[logging]\nlevel='loud'", "level must be one of"),
        ("[cache]\nmax_items_per_node=0", "positive integer"),
        ("[cache]\nmax_items_per_node=true", "positive integer"),
        ("[cache]\nrules=[1]", "array of tables"),
        ("[xmpp]\nrequest_timeout=0", "request_timeout must be seconds"),
        ("[xmpp]\nrequest_timeout='5'", "request_timeout must be seconds"),
        ("[xmpp]\ntimeout=5", "unknown key 'timeout' in [xmpp]"),
        ("database = 3", "[database] must be a table"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert says in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")
