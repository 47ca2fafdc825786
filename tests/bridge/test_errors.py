"""Exceptions become named D-Bus errors at the boundary; internals never cross it."""

from __future__ import annotations

import logging

import pytest
from dbus_fast import DBusError

from roost.bridge.client import (
    ConflictError,
    InternalError,
    NotFoundError,
    RoostDBusError,
    XmppError,
    error_from_reply,
)
from roost.bridge.errors import to_dbus_error
from roost.service import errors


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (errors.InvalidArgument("bad"), "InvalidArgument"),
        (errors.NotFound("none"), "NotFound"),
        (errors.NotConnected("down"), "NotConnected"),
        (errors.Conflict("twice"), "Conflict"),
        (errors.Forbidden("no"), "Forbidden"),
        (errors.Internal("broke"), "Internal"),
        (errors.ConnectionFailed("bad password"), "NotConnected"),
        (errors.XmppError("item-not-found", "gone"), "Xmpp.ItemNotFound"),
    ],
)
def test_service_errors_keep_name_and_message(error: errors.RoostError, name: str) -> None:
    mapped = to_dbus_error(error, "Iface.Member")
    assert mapped.type == f"org.roost.Backend1.Error.{name}"
    assert mapped.text == error.message


def test_anything_else_is_internal_with_a_generic_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise RuntimeError("/secret/install/path line 42")
    except RuntimeError as err:
        with caplog.at_level(logging.ERROR, logger="roost.bridge.errors"):
            mapped = to_dbus_error(err, "org.roost.Backend1.Storage.GetValues")
    assert mapped.type == "org.roost.Backend1.Error.Internal"
    assert "secret" not in mapped.text
    assert "Storage.GetValues" in mapped.text
    assert "Traceback" in caplog.text and "/secret/install/path" in caplog.text


def test_a_dbus_error_passes_unchanged() -> None:
    original = DBusError("org.roost.Backend1.Error.NotFound", "x")
    assert to_dbus_error(original, "m") is original


def test_the_client_raises_one_class_per_name() -> None:
    prefix = "org.roost.Backend1.Error."
    assert type(error_from_reply(prefix + "NotFound", "m")) is NotFoundError
    assert type(error_from_reply(prefix + "Conflict", "m")) is ConflictError
    assert type(error_from_reply(prefix + "Internal", "m")) is InternalError
    assert type(error_from_reply(prefix + "Xmpp.Forbidden", "m")) is XmppError
    other = error_from_reply("org.freedesktop.DBus.Error.ServiceUnknown", "m")
    assert type(other) is RoostDBusError and other.message == "m"
