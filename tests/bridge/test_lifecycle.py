"""``roostd`` as a process: start, refusals with one clear line, signals, activation."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dbus_fast import Variant

from roost.bridge.client import RoostClient, RoostDBusError
from roost.bridge.constants import BUS_NAME, OBJECT_PATH
from roost.storage.engines.sqlite import CLEAN_STOP
from tests.fixtures.dbus import RoostdLauncher, name_owner_pid, roostd_env, start_bus, stop_bus

pytestmark = pytest.mark.dbus

DATA = Path(__file__).parents[2] / "data"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_sigterm_stops_cleanly(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    assert daemon.terminate() == 0
    log = daemon.log_text()
    assert "stopping on signal" in log
    assert "Traceback" not in log


def test_sigint_stops_cleanly(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    daemon.process.send_signal(signal.SIGINT)
    assert daemon.process.wait(20) == 0


def user_version(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


# A clean stop marks the file so that the next start trusts the full-text index (its
# check reads every cached item, and full-text searches wait for it); a start spends the
# mark, so a daemon killed afterwards leaves the index to be checked.
def test_a_clean_stop_marks_the_database_and_a_kill_leaves_no_mark(
    roostd_launcher: RoostdLauncher,
) -> None:
    daemon = roostd_launcher.start()
    assert user_version(daemon.database) == 0
    assert daemon.terminate() == 0
    assert user_version(daemon.database) == CLEAN_STOP
    again = roostd_launcher.start(database=daemon.database)
    assert user_version(daemon.database) == 0
    again.process.kill()
    again.process.wait(20)
    assert user_version(daemon.database) == 0


# The daemon makes its database and directory itself: owner-only from the first start.
@pytest.mark.empty_database
def test_the_database_is_private(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    assert stat.S_IMODE(daemon.database.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.database.parent.stat().st_mode) == 0o700
    assert daemon.terminate() == 0


def test_a_second_daemon_refuses_with_one_line(roostd_launcher: RoostdLauncher) -> None:
    first = roostd_launcher.start()
    second = roostd_launcher.spawn()
    assert second.process.wait(20) == 1
    assert last_line(second.log_text()) == (
        f"roostd: the name {BUS_NAME} is already owned on {roostd_launcher.bus_address}"
    )
    assert first.process.poll() is None


def test_an_unreachable_bus_is_one_line(roostd_launcher: RoostdLauncher, tmp_path: Path) -> None:
    daemon = roostd_launcher.spawn(bus_address=f"unix:path={tmp_path / 'no-bus'}")
    assert daemon.process.wait(20) == 1
    line = last_line(daemon.log_text())
    assert line.startswith("roostd: cannot connect to unix:path=")
    assert "Traceback" not in daemon.log_text()


def test_a_database_newer_than_the_code_is_refused(roostd_launcher: RoostdLauncher) -> None:
    first = roostd_launcher.start()
    assert first.terminate() == 0
    with sqlite3.connect(first.database) as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    again = roostd_launcher.spawn(database=first.database)
    assert again.process.wait(20) == 1
    line = last_line(again.log_text())
    assert line.startswith("roostd: cannot open the database:")
    assert "newer" in line


def test_a_database_that_cannot_be_opened_is_one_line(roostd_launcher: RoostdLauncher) -> None:
    # (At debug level the traceback is logged too, for whoever investigates.)
    daemon = roostd_launcher.spawn("--database", "nosuchdriver://x", "--log-level", "info")
    assert daemon.process.wait(20) == 1
    assert last_line(daemon.log_text()).startswith("roostd: cannot open the database: ")
    assert "Traceback" not in daemon.log_text()


def test_a_bad_config_file_is_one_line(roostd_launcher: RoostdLauncher, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[logging]\nlevel = 'loud'\n")
    daemon = roostd_launcher.spawn("--config", str(config))
    assert daemon.process.wait(20) == 2
    assert daemon.log_text().strip() == (
        f"roostd: {config}: [logging] level must be one of debug, info, warning, error, critical"
    )


def test_logs_suit_journald(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start(env={"JOURNAL_STREAM": "8:1234"})
    assert daemon.terminate() == 0
    lines = daemon.log_text().splitlines()
    assert lines and all(line.startswith("<") for line in lines)
    assert "<6>roost.daemon: stopped" in lines


async def test_sigterm_during_a_burst_of_calls(roostd_launcher: RoostdLauncher) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    acknowledged: list[int] = []
    warmed_up = asyncio.Event()

    async def writer(worker: int) -> None:
        for step in range(10_000):
            index = worker * 100_000 + step
            try:
                await client.set_value("@global@", "burst", f"k{index}", Variant("x", index))
            except RoostDBusError:
                return
            acknowledged.append(index)
            if len(acknowledged) >= 200:
                warmed_up.set()

    async def profile_maker() -> None:
        for step in range(10_000):
            try:
                await client.create_profile(f"burst{step}", "me@example.org", "pw")
            except RoostDBusError:
                return

    tasks = [asyncio.ensure_future(writer(n)) for n in range(8)]
    tasks.append(asyncio.ensure_future(profile_maker()))
    await asyncio.wait_for(warmed_up.wait(), 30)
    daemon.process.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(daemon.process.wait, 30)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    client.close()

    assert status == 0
    with sqlite3.connect(daemon.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {
            int(key[1:])
            for (key,) in db.execute("SELECT key FROM kv_store WHERE namespace = 'burst'")
        }
        profiles = {name for (name,) in db.execute("SELECT name FROM profiles")}
        default = db.execute(
            "SELECT value FROM params WHERE category = '@roost' AND name = 'default_profile'"
        ).fetchone()
    # Every acknowledged write is there; nothing is stored that was not asked for.
    assert set(acknowledged) <= stored
    assert all(index % 100_000 < 10_000 for index in stored)
    # The first profile became the default in the same run: both or neither are there.
    assert ("burst0" in profiles) == (default is not None and default[0] == "burst0")


def render_service_file(service_dir: Path) -> Path:
    """data/'s activation file with ``@bindir@`` filled in, as a packager installs it."""
    text = (DATA / "org.roost.Backend1.service.in").read_text()
    rendered = service_dir / "org.roost.Backend1.service"
    rendered.write_text(text.replace("@bindir@", str(Path(sys.executable).parent)))
    return rendered


async def test_bus_activation_starts_the_daemon(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = roostd_env(home, "")
    del env["DBUS_SESSION_BUS_ADDRESS"]
    bus = start_bus(tmp_path / "bus", env=env)
    try:
        service = render_service_file(bus.service_dir)
        assert "Exec=" + str(Path(sys.executable).parent / "roostd") in service.read_text()
        done = await asyncio.to_thread(
            subprocess.run,
            ["gdbus", "call", "--address", bus.address, "--dest", BUS_NAME, "--object-path",
             OBJECT_PATH, "--method", "org.freedesktop.DBus.Properties.Get",
             "org.roost.Backend1", "Version"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        from importlib.metadata import version

        assert done.stdout.strip() == f"(<'{version('roost')}'>,)"
        # The activated daemon used the default place under the (test's) data home.
        assert (home / "data" / "roost" / "roost.sqlite").exists()
        await stop_activated(bus.address)
    finally:
        stop_bus(bus)


async def stop_activated(address: str) -> None:
    """SIGTERM the daemon the bus started, found by its connection's process id."""
    pid = await name_owner_pid(address)
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the activated daemon did not stop on SIGTERM")
