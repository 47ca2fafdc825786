"""Running the ``roost`` command as a user does: a subprocess on the tests' private bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dbus import Roostd

# A command waits for the daemon (and a server behind it) on a loaded machine.
COMMAND_TIMEOUT = 120.0


def roost_command() -> list[str]:
    """How to run ``roost``: the console script beside this interpreter."""
    script = Path(sys.executable).with_name("roost")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "roost.cli"]


@dataclass
class RoostResult:
    """What one ``roost`` run printed and how it ended."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as the one JSON document ``--json`` prints."""
        assert self.code == 0, f"roost {' '.join(self.args)} exited {self.code}: {self.stderr}"
        return json.loads(self.stdout)


@dataclass
class RoostCli:
    """Runs ``roost --bus-address <the daemon's bus>`` with arguments."""

    bus_address: str
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None) -> RoostResult:
        """Run ``roost ARGS`` to its end (stdin: ``input``, else nothing)."""
        completed = subprocess.run(
            [*roost_command(), "--bus-address", self.bus_address, *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT,
        )
        return RoostResult(list(args), completed.returncode, completed.stdout, completed.stderr)


def cli_env(home: Path) -> dict[str, str]:
    """An environment away from the user's buses and files, without a terminal's width."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOST_", "DBUS_"))}
    env.update(HOME=str(home), COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def roost_cli(roostd: Roostd, tmp_path: Path) -> RoostCli:
    """The ``roost`` command pointed at the module's daemon."""
    return RoostCli(roostd.bus_address, cli_env(tmp_path))
