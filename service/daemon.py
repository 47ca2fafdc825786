"""``roostd``: the daemon's entry point.

Start-up order: read the config, set up logging, open (and migrate) the database, build
the :class:`~roost.service.backend.Backend`, then start every bridge of the
``roost.bridges`` entry-point group, and only then the backend's background work (the
full-text check, autoconnections). Loading bridges by entry point keeps this layer free
of D-Bus: the D-Bus bridge is one plugin (``dbus = roost.bridge.server:DBusBridge``).
Setting ``ROOST_LOOP_LAG_MS`` turns on the event loop's lag probe
(:mod:`roost.service.loop_lag`), ``ROOST_MEMORY_TRACE`` snapshots of the Python heap on
``SIGUSR1`` (:mod:`roost.service.memory_trace`).

SIGTERM and SIGINT stop the bridges (no new calls; calls in flight finish), close the
sessions and the database, and exit 0. A failure the user can fix (name already owned,
bus unreachable, database newer than the code, bad config) is one line on stderr and a
non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol

from roost.service.backend import Backend
from roost.service.config import LOG_LEVELS, Config, ConfigError, load_config
from roost.service.loop_lag import LoopLagProbe
from roost.service.loop_priority import LOOP_PRIORITY
from roost.service.memory_trace import MemoryTrace
from roost.storage.errors import DatabaseTooNew, StorageError

log = logging.getLogger("roost.daemon")

BRIDGE_GROUP = "roost.bridges"
QUIET_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg")
EXIT_USAGE = 2
EXIT_FAILURE = 1
# A sync allocates tens of thousands of short-lived objects a page (XML elements, rows):
# with the default thresholds (700, 10, 10) the collector ran so often that it took
# about a third of the daemon's CPU time while syncing. Synapse raises them likewise.
# The first two bound a generation-1 pass, which walks what a sync holds at that moment
# (the items being parsed, stored and read ahead) and holds the event loop meanwhile:
# up to 10 x 10,000 objects held it 40-90 ms during a sync, 2 x 3,000 about 20 ms at
# most, for the same sync rate (docs/performance.md, "Responsiveness"). Below 3,000 the
# full collections came often enough to stall longer again.
GC_THRESHOLDS = (3_000, 2, 100)
# A short database read runs on the event loop's thread, and SQLite's driver lets the GIL
# go for each step of a statement (each row of a page). With a worker thread running
# Python meanwhile (a sync's items being parsed), the loop's thread then waits for the
# GIL back until the switch interval has passed, once per row: a page of 20 took 68 ms
# beside one busy thread at the default 5 ms, and 1.2 ms at 0.5 ms (bench/gil_handoff.py).
# A thread holding the GIL for its turn is asked to let go ten times sooner; the sync's
# own rate did not change measurably.
GIL_SWITCH_INTERVAL = 0.0005


class StartupError(Exception):
    """A start-up failure the user can act on; its message is printed as the one line."""


class Bridge(Protocol):
    """What the daemon expects of a bridge class from the ``roost.bridges`` group."""

    def __init__(self, backend: Backend, options: argparse.Namespace) -> None: ...

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the bridge's own command-line options."""
        ...

    async def start(self) -> None:
        """Serve; raise :class:`StartupError` for a failure the user can fix."""
        ...

    async def wait_closed(self) -> str:
        """Return (with a reason) when the bridge stopped serving by itself."""
        ...

    async def stop(self) -> None:
        """Stop taking calls, let the calls in flight finish, and disconnect."""
        ...


def load_bridge_classes() -> list[type[Bridge]]:
    """The bridge classes registered in the ``roost.bridges`` entry-point group."""
    classes: list[type[Bridge]] = []
    for entry in sorted(metadata.entry_points(group=BRIDGE_GROUP), key=lambda e: e.name):
        classes.append(entry.load())
    return classes


def build_parser(bridges: Sequence[type[Bridge]]) -> argparse.ArgumentParser:
    """The command-line parser, with every bridge's options."""
    parser = argparse.ArgumentParser(
        prog="roostd", description="Roost: the XMPP backend daemon on the session bus."
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="database URL (default: ROOST_DATABASE_URL, the config's, or an SQLite file "
        "under the XDG data directory)",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="log level (default: the config's, or info)"
    )
    for bridge in bridges:
        bridge.add_arguments(parser)
    return parser


class _JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald reads the priority prefix and stamps time."""

    PRIORITIES = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        """Prefix each line with its syslog priority, so tracebacks keep theirs too."""
        priority = self.PRIORITIES.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def setup_logging(level: int) -> None:
    """Log to stderr; without timestamps when journald takes the stream (it adds them)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These log every statement with its parameters at debug/info level, passwords
    # included: never let them follow the root level down.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


async def serve(
    config: Config, options: argparse.Namespace, bridge_classes: Sequence[type[Bridge]]
) -> int:
    """Run the daemon until a signal or a lost bridge; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Started first, so that what opening the database and the bridges allocates is in
    # the snapshots too (the imports before it are not).
    trace = MemoryTrace.from_environment()
    if trace is not None:
        trace.start()

    try:
        # What runs in the background waits until the bridges serve: the name is owned
        # sooner, the full-text check and the connections not competing for the CPU.
        backend = await Backend.open(config, options.database, defer_background=True)
    except (DatabaseTooNew, StorageError, OSError) as err:
        raise StartupError(f"cannot open the database: {err}") from None
    except Exception as err:
        # A malformed URL, an unreachable or refusing server: the driver's own message
        # says which; the traceback is for --log-level debug.
        log.debug("opening the database failed", exc_info=True)
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StartupError(f"cannot open the database: {detail}") from None
    if trace is not None:
        trace.watch_database(backend.db.client_memory)

    bridges: list[Bridge] = []
    status = 0
    probe = LoopLagProbe.from_environment()
    try:
        for cls in bridge_classes:
            bridge = cls(backend, options)
            await bridge.start()
            bridges.append(bridge)
        # What start-up built lives as long as the daemon: keep the collector from
        # walking it again and again.
        gc.freeze()
        log.info("roostd %s ready", backend.version)
        backend.start_background()
        if probe is not None:
            probe.start()

        stopped = asyncio.ensure_future(stop.wait())
        lost = [asyncio.ensure_future(bridge.wait_closed()) for bridge in bridges]
        done, pending = await asyncio.wait([stopped, *lost], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if stopped in done:
            log.info("stopping on signal")
        else:
            reason = next(task.result() for task in done if task is not stopped)
            log.error("stopping: %s", reason)
            status = EXIT_FAILURE
    finally:
        if probe is not None:
            await probe.stop()
        if trace is not None:
            trace.stop()
        for bridge in reversed(bridges):
            try:
                await bridge.stop()
            except Exception:
                log.exception("stopping a bridge failed")
        await backend.close()
    log.info("stopped")
    return status


def daemon_runner() -> asyncio.Runner:
    """An ``asyncio.Runner`` with the interpreter set as ``roostd`` runs: the collector's
    thresholds, the GIL's switch interval, and the event loop that lets worker threads
    know when it has work (:mod:`roost.service.loop_priority`).

    The benchmarks that measure the service layer in their own process run it so too.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return asyncio.Runner(loop_factory=LOOP_PRIORITY.loop_factory)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``roostd`` console script."""
    bridge_classes = load_bridge_classes()
    options = build_parser(bridge_classes).parse_args(argv)
    try:
        config = load_config(options.config)
    except ConfigError as err:
        print(f"roostd: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    setup_logging(logging.getLevelName((options.log_level or config.log_level).upper()))
    try:
        with daemon_runner() as runner:
            status = runner.run(serve(config, options, bridge_classes))
    except StartupError as err:
        print(f"roostd: {err}", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE) from None
    raise SystemExit(status)


if __name__ == "__main__":
    main()
