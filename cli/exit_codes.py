"""The ``roost`` command's exit codes, one per family of failure (docs/cli.md lists them).

Scripts branch on these: a code keeps its meaning from release to release.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``roost`` command's exit status means."""

    OK = 0
    #: A failure with no family of its own (an unexpected reply, a bus error).
    FAILURE = 1
    #: The command line itself is wrong (an unknown option, a missing argument).
    USAGE = 2
    #: ``Error.InvalidArgument``: the daemon refused an argument.
    INVALID_ARGUMENT = 3
    #: ``Error.NotFound``: no such profile, param, value, contact or node.
    NOT_FOUND = 4
    #: ``Error.NotConnected``: the profile has no XMPP session up.
    NOT_CONNECTED = 5
    #: ``Error.Conflict``: it exists already, or the state forbids the change.
    CONFLICT = 6
    #: ``Error.Forbidden``: refused by the daemon.
    FORBIDDEN = 7
    #: ``Error.Xmpp.*``: the XMPP server answered with an error.
    XMPP = 8
    #: ``Error.Internal``: a failure inside the daemon (its log has the details).
    INTERNAL = 9
    #: No daemon answers on the bus (or no bus could be reached).
    DAEMON_NOT_RUNNING = 10
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130
