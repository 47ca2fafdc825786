"""Which database roostd opens: ``--database``, then ``ROOST_DATABASE_URL``, then the
configuration file's ``[database] url``, then the default file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.dbus import RoostdLauncher

pytestmark = pytest.mark.dbus


def write_config(path: Path, database: Path) -> Path:
    """A configuration file naming ``database``."""
    path.write_text(f'[database]\nurl = "sqlite:///{database}"\n')
    return path


def test_environment_wins_over_the_config_file(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    from_file, from_env = tmp_path / "file.sqlite", tmp_path / "env.sqlite"
    config = write_config(tmp_path / "roost.toml", from_file)
    daemon = roostd_launcher.start(
        "--config",
        str(config),
        env={"ROOST_DATABASE_URL": f"sqlite:///{from_env}"},
        database_option=False,
    )
    assert daemon.terminate() == 0
    assert from_env.exists(), daemon.log_text()
    assert not from_file.exists()
    assert f"database sqlite+aiosqlite:///{from_env}: created" in daemon.log_text()


def test_command_line_wins_over_environment_and_config_file(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    from_file, from_env = tmp_path / "file.sqlite", tmp_path / "env.sqlite"
    from_option = tmp_path / "option.sqlite"
    config = write_config(tmp_path / "roost.toml", from_file)
    daemon = roostd_launcher.start(
        "--config",
        str(config),
        database=from_option,
        env={"ROOST_DATABASE_URL": f"sqlite:///{from_env}"},
    )
    assert daemon.terminate() == 0
    assert from_option.exists(), daemon.log_text()
    assert not from_env.exists()
    assert not from_file.exists()


def test_config_file_wins_over_the_default(roostd_launcher: RoostdLauncher, tmp_path: Path) -> None:
    from_file = tmp_path / "file.sqlite"
    config = write_config(tmp_path / "roost.toml", from_file)
    daemon = roostd_launcher.start("--config", str(config), database_option=False)
    assert daemon.terminate() == 0
    assert from_file.exists(), daemon.log_text()
    # The default file, under the daemon's own XDG data directory, was never made.
    assert not (daemon.database.parent).exists()
