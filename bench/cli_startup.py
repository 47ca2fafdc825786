"""Command-line start-up: the wall time of ``roost --help`` and ``roost profile list``.

Prints one JSON object a line through ``bench/figures.py``; progress goes to stderr.

On a private dbus-daemon, ``roostd`` runs with a SQLite file holding a few profiles, and
each command is launched as a person's shell launches it (the console script, a new
process each time), from launch to exit:

- ``python -c pass``: the interpreter alone, the baseline of every figure;
- ``roost --help``: parsing the command line and printing the help, no bus;
- ``roost profile list`` against the daemon: connecting to the bus, two calls, and the
  table printed with rich (the human output; ``--json`` is measured too).

The three kinds run in turn, ``RUNS`` times each, so that the machine's load falls on all
alike. The median is reported against the 0.3 s target, with the highest percentile the
samples support (bench/figures.py) and the baseline. Byte code is compiled by uncounted
first runs and kept under the bench's temporary directory (``PYTHONPYCACHEPREFIX``), as an
installed package has it. Before measuring, ``-X importtime`` checks that none of these
commands imports SQLAlchemy or slixmpp (nor, for ``--help`` and ``--json``, rich).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import emit, progress, spread, upper
from tests.fixtures.dbus import roostd_command, roostd_env, start_bus, stop_bus, wait_for_name

BENCH = "cli_startup"
RUNS = 20 if os.environ.get("ROOST_BENCH_SMALL") else 100
WARM_UP = 3
TARGET_SECONDS = 0.3
PROFILES = 5
#: Never imported by the command's own start (the daemon's libraries).
FORBIDDEN = ("sqlalchemy", "slixmpp", "alembic", "aiosqlite")


def roost_script() -> Path:
    """The ``roost`` console script beside this interpreter."""
    script = Path(sys.executable).with_name("roost")
    if not script.exists():
        raise RuntimeError(f"no roost console script beside {sys.executable}: pip install .")
    return script


def wall_time(command: list[str], env: dict[str, str]) -> float:
    """Seconds from launch to exit of ``command`` (which must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed


def imported(command: list[str], env: dict[str, str]) -> set[str]:
    """The top-level packages ``command`` (a Python script) imports, by ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def check_imports(commands: dict[str, list[str]], env: dict[str, str]) -> None:
    """None of the commands imports the daemon's libraries; ``--help`` and ``--json``
    not even rich."""
    for name, command in commands.items():
        found = imported(command, env)
        bad = sorted(found & set(FORBIDDEN))
        if "rich" in found and name in ("help", "profile_list_json"):
            bad.append("rich")
        if bad:
            raise RuntimeError(f"roost {name} imports {', '.join(bad)}")
        progress(BENCH, f"{name}: {len(found)} top-level packages imported, none of the daemon's")


def main() -> None:
    """Run the benchmark on a private bus in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="roost-bench-cli-") as tmp:
        directory = Path(tmp)
        bus = start_bus(directory / "bus")
        home = directory / "home"
        home.mkdir()
        daemon_env = roostd_env(home, bus.address)
        log = (directory / "roostd.log").open("wb")
        daemon = subprocess.Popen(
            [
                *roostd_command(),
                "--bus-address",
                bus.address,
                "--database",
                f"sqlite:///{directory / 'roost.sqlite'}",
                "--log-level",
                "warning",
            ],
            env=daemon_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            wait_for_name(bus.address)
            run(directory, bus.address)
        finally:
            daemon.terminate()
            daemon.wait(30)
            log.close()
            stop_bus(bus)


def run(directory: Path, address: str) -> None:
    """The profiles, the import check, then the timed runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOST_", "DBUS_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        HOME=str(directory / "home"),
        PYTHONPYCACHEPREFIX=str(directory / "pycache"),
        COLUMNS="100",
    )
    roost = [str(roost_script()), "--bus-address", address]
    for n in range(PROFILES):
        subprocess.run(
            [*roost, "profile", "create", f"p{n}", f"p{n}@example.org", "--port", "5222"],
            input=b"secret\n",
            env=env,
            check=True,
            capture_output=True,
        )
    commands = {
        "python_pass": [sys.executable, "-c", "pass"],
        "help": [str(roost_script()), "--help"],
        "profile_list": [*roost, "profile", "list"],
        "profile_list_json": [*roost, "profile", "list", "--json"],
    }
    check_imports({k: v for k, v in commands.items() if k != "python_pass"}, env)
    progress(BENCH, f"{WARM_UP} uncounted runs of each (byte code), then {RUNS} of each")
    for _ in range(WARM_UP):
        for command in commands.values():
            wall_time(command, env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(RUNS):
        for name, command in commands.items():
            samples[name].append(wall_time(command, env))

    base = spread(samples["python_pass"])
    emit(BENCH, "python_pass_median", base["median"], "s", runs=RUNS)
    for name, metric in (
        ("help", "roost_help"),
        ("profile_list", "roost_profile_list"),
        ("profile_list_json", "roost_profile_list_json"),
    ):
        found = spread(samples[name])
        emit(
            BENCH,
            f"{metric}_median",
            found["median"],
            "s",
            baseline=base["median"],
            at_most=TARGET_SECONDS,
            runs=RUNS,
        )
        label, value = upper(samples[name])
        base_label, base_value = upper(samples["python_pass"])
        assert label == base_label
        emit(
            BENCH,
            f"{metric}_{label}",
            value,
            "s",
            baseline=base_value,
            at_most=TARGET_SECONDS,
            runs=RUNS,
            max=round(found["max"], 3),
        )


if __name__ == "__main__":
    main()
