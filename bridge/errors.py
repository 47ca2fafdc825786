"""Exceptions translated once, at the D-Bus boundary.

Every :class:`~roost.service.errors.RoostError` becomes the D-Bus error
``org.roost.Backend1.Error.<name>`` with its message; anything else is a bug, logged with
its traceback here and answered as ``Error.Internal`` with a generic message, so that no
traceback or internal detail crosses the bus.
"""

from __future__ import annotations

import logging

from dbus_fast import DBusError

from roost.bridge.constants import ERROR_INTERNAL, ERROR_PREFIX
from roost.service.errors import RoostError

log = logging.getLogger(__name__)


def error_name(err: RoostError) -> str:
    """The D-Bus error name of a service error (``org.roost.Backend1.Error.NotFound``)."""
    return ERROR_PREFIX + err.name


def to_dbus_error(err: BaseException, doing: str) -> DBusError:
    """The D-Bus error to answer for ``err``, raised while ``doing`` (a member name).

    A :class:`DBusError` passes unchanged; a :class:`RoostError` keeps its name and
    message; anything else is logged with its traceback and becomes ``Error.Internal``.
    """
    if isinstance(err, DBusError):
        return err
    if isinstance(err, RoostError):
        return DBusError(error_name(err), err.message)
    log.error("unexpected failure in %s", doing, exc_info=err)
    return DBusError(
        ERROR_INTERNAL,
        f"Roost failed unexpectedly in {doing}; the daemon's log has the details",
    )
