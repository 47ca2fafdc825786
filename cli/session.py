"""How a ``roost`` command reaches the daemon, and how its failures become exit codes.

A command body is a coroutine taking a connected :class:`~roost.bridge.client.RoostClient`;
:func:`run_with_client` connects (to ``--bus-address`` or the session bus), runs it, and
turns every failure into one readable line on stderr and its :class:`ExitCode`. The
bridge's client and dbus-fast are imported here, when a command runs, never when the
command line is parsed: ``roost --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TypeVar

from roost.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient

T = TypeVar("T")

# Bus errors that mean nobody serves the daemon's name (and activation could not start it).
_NO_DAEMON_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.Spawn.ChildExited",
        "org.freedesktop.DBus.Error.Spawn.ExecFailed",
        "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
        "org.freedesktop.DBus.Error.TimedOut",
        "org.freedesktop.DBus.Error.NoReply",
    }
)


class CommandError(Exception):
    """A failure the command itself finds (a file that cannot be read…): its message is
    printed as is, and the command exits with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class CliOptions:
    """What the root command's options say, for every subcommand (``ctx.obj``)."""

    bus_address: str | None = None


def exit_code_for(error_name: str) -> ExitCode:
    """The exit code of a D-Bus error reply's name."""
    from roost.bridge.constants import ERROR_PREFIX, ERROR_XMPP_PREFIX

    if error_name.startswith(ERROR_XMPP_PREFIX):
        return ExitCode.XMPP
    if error_name in _NO_DAEMON_ERRORS:
        return ExitCode.DAEMON_NOT_RUNNING
    family = error_name.removeprefix(ERROR_PREFIX) if error_name.startswith(ERROR_PREFIX) else ""
    return {
        "InvalidArgument": ExitCode.INVALID_ARGUMENT,
        "NotFound": ExitCode.NOT_FOUND,
        "NotConnected": ExitCode.NOT_CONNECTED,
        "Conflict": ExitCode.CONFLICT,
        "Forbidden": ExitCode.FORBIDDEN,
        "Internal": ExitCode.INTERNAL,
    }.get(family, ExitCode.FAILURE)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``roost: message`` on stderr and exit with ``code``."""
    print(f"roost: {message}", file=sys.stderr, flush=True)
    raise SystemExit(int(code))


def run_with_client(options: CliOptions, body: Callable[[RoostClient], Awaitable[T]]) -> T:
    """Connect to the daemon, run ``body`` with the client, disconnect; every failure
    becomes a one-line message and its exit code."""
    import asyncio

    from roost.bridge.client import RoostDBusError

    try:
        return asyncio.run(_with_client(options, body))
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)
    except CommandError as exc:
        fail(str(exc), exc.code)
    except RoostDBusError as exc:
        code = exit_code_for(exc.name)
        if code is ExitCode.DAEMON_NOT_RUNNING:
            fail(
                "the Roost daemon is not running on this bus "
                f"({exc.message or exc.name}); start it with roostd, or install its "
                "activation file with 'roost install-user-services'",
                code,
            )
        short = exc.name.rsplit(".Error.", 1)[-1]
        fail(f"{exc.message} [{short}]" if exc.message else short, code)


async def _with_client(options: CliOptions, body: Callable[[RoostClient], Awaitable[T]]) -> T:
    from roost.bridge.client import RoostClient

    try:
        client = await RoostClient.connect(options.bus_address)
    except Exception as exc:  # dbus-fast raises OSError, ValueError and its own kinds
        where = options.bus_address or "the session bus"
        raise CommandError(
            f"cannot reach {where}: {exc or type(exc).__name__}", ExitCode.DAEMON_NOT_RUNNING
        ) from None
    try:
        return await body(client)
    finally:
        client.close()
