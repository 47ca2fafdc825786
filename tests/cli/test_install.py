"""``roost install-user-services``: the activation file and the systemd unit of a pip
install, and a bus that activates the daemon through them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

from roost.bridge.constants import BUS_NAME, OBJECT_PATH
from tests.cli.conftest import COMMAND_TIMEOUT, cli_env, roost_command
from tests.fixtures.dbus import name_owner_pid, roostd_env, start_bus, stop_bus

ROOT = Path(__file__).parents[2]
SERVICE = "org.roost.Backend1.service"
UNIT = "roostd.service"
# A first activation starts a fresh interpreter that imports the daemon and creates its
# database: generous, for a loaded machine.
ACTIVATION_TIMEOUT = 120


def install_command(
    command: list[str], home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``roost install-user-services ARGS`` with ``home`` as HOME and no XDG variables."""
    environment = {k: v for k, v in cli_env(home).items() if not k.startswith("XDG_")}
    environment.update(env or {})
    return subprocess.run(
        [*command, "install-user-services", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=COMMAND_TIMEOUT,
    )


def test_writes_both_files_where_xdg_says_and_removes_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data, config = tmp_path / "data", tmp_path / "config"
    xdg = {"XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(config)}
    done = install_command(roost_command(), home, env=xdg)
    assert done.returncode == 0, done.stderr
    service = data / "dbus-1" / "services" / SERVICE
    unit = config / "systemd" / "user" / UNIT
    roostd = Path(sys.executable).absolute().with_name("roostd")
    assert f"Wrote {service}" in done.stdout and f"Wrote {unit}" in done.stdout
    service_text, unit_text = service.read_text(), unit.read_text()
    assert f"\nExec={roostd}\n" in service_text
    assert "\nName=org.roost.Backend1\n" in service_text
    assert "\nSystemdService=roostd.service\n" in service_text
    assert f"\nExecStart={roostd}\n" in unit_text and "\nType=dbus\n" in unit_text
    assert "@bindir@" not in service_text + unit_text
    assert service.stat().st_mode & 0o777 == 0o644
    # Nothing under HOME: the XDG directories were used.
    assert not home.exists() or not any(home.rglob("*.service"))

    # Again: the files are replaced, not duplicated.
    assert install_command(roost_command(), home, env=xdg).returncode == 0
    assert sorted(p.name for p in data.rglob("*.service")) == [SERVICE]

    removed = install_command(roost_command(), home, "--uninstall", env=xdg)
    assert removed.returncode == 0, removed.stderr
    assert f"Removed {service}" in removed.stdout and f"Removed {unit}" in removed.stdout
    assert not service.exists() and not unit.exists()
    again = install_command(roost_command(), home, "--uninstall", env=xdg)
    assert again.returncode == 0 and "Not there" in again.stdout


def test_a_place_that_cannot_be_written_exits_1(tmp_path: Path) -> None:
    blocked = tmp_path / "data"
    blocked.write_text("a file where a directory should be")
    done = install_command(roost_command(), tmp_path / "home", env={"XDG_DATA_HOME": str(blocked)})
    assert done.returncode == 1
    assert done.stderr.startswith("roost: cannot write ") and "Traceback" not in done.stderr


def make_venv(directory: Path) -> Path:
    """A fresh virtual environment with Roost installed by pip from the source tree; its
    ``bin``.

    The environment sees the system's site-packages, and this test run's (one path
    line, for the dependencies that are not installed system-wide: the editable install
    found there is never loaded, since a path line processes no ``.pth`` file).
    """
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(directory)],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
    )
    python = directory / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "roost-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=directory,
    )
    assert installed.returncode == 0, installed.stderr
    # The templates are in the wheel, and this roost is the one imported.
    where = subprocess.run(
        [str(python), "-c", "import roost.cli; print(roost.cli.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=directory,
    ).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(Path(site)), where
    assert (package / "data" / "org.roost.Backend1.service.in").is_file()
    assert (package / "data" / "roostd.service.in").is_file()
    return directory / "bin"


async def stop_process(pid: int) -> None:
    """SIGTERM ``pid`` and wait until it is gone (it is the bus's child, not ours)."""
    os.kill(pid, signal.SIGTERM)
    for _ in range(400):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the activated daemon did not stop on SIGTERM")


@pytest.mark.slow
async def test_a_pip_install_is_activated_by_the_bus(tmp_path: Path) -> None:
    bindir = await asyncio.to_thread(make_venv, tmp_path / "venv")
    home = tmp_path / "home"
    home.mkdir()
    done = install_command([str(bindir / "roost")], home)
    assert done.returncode == 0, done.stderr
    service_dir = home / ".local" / "share" / "dbus-1" / "services"
    service = service_dir / SERVICE
    unit = home / ".config" / "systemd" / "user" / UNIT
    roostd = bindir / "roostd"
    assert f"\nExec={roostd}\n" in service.read_text()
    assert f"\nExecStart={roostd}\n" in unit.read_text()

    env = roostd_env(home, "")
    del env["DBUS_SESSION_BUS_ADDRESS"]
    bus = await asyncio.to_thread(start_bus, tmp_path / "bus", env, service_dir)
    try:
        called = await asyncio.to_thread(
            subprocess.run,
            ["gdbus", "call", "--address", bus.address, "--dest", BUS_NAME, "--object-path",
             OBJECT_PATH, "--method", "org.freedesktop.DBus.Properties.Get",
             "org.roost.Backend1", "Version", "--timeout", str(ACTIVATION_TIMEOUT)],
            capture_output=True, text=True, timeout=ACTIVATION_TIMEOUT + 30,
        )  # fmt: skip
        assert called.returncode == 0, called.stderr
        assert called.stdout.strip() == f"(<'{version('roost')}'>,)"
        # The bus started the venv's roostd, which made its database under the data home.
        pid = await name_owner_pid(bus.address)
        cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
        command = cmdline.split(b"\0")
        assert str(roostd).encode() in command, command
        assert (home / "data" / "roost" / "roost.sqlite").exists()
        # The command line frontend of the venv reaches it too.
        listed = await asyncio.to_thread(
            subprocess.run,
            [str(bindir / "roost"), "--bus-address", bus.address, "profile", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert listed.returncode == 0, listed.stderr
        await stop_process(pid)
    finally:
        stop_bus(bus)

    removed = install_command([str(bindir / "roost")], home, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not service.exists() and not unit.exists()
