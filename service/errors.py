"""The errors the service layer raises.

Every failure a caller can act on is one of these; a bridge maps each class to its own
error names once, at its boundary (the D-Bus bridge to ``org.roost.Backend1.Error.*``).
Anything else escaping the service layer is a bug and surfaces as ``Internal``.
"""

from __future__ import annotations


class RoostError(Exception):
    """Root of every error the service layer raises on purpose.

    ``name`` is the short, bridge-neutral name of the error (``InvalidArgument``…).
    """

    name = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RoostError, ValueError):
    """An argument is malformed, out of range or of the wrong type."""

    name = "InvalidArgument"


class NotFound(RoostError, LookupError):
    """The named profile, node, item or key does not exist."""

    name = "NotFound"


class NotConnected(RoostError):
    """The profile has no XMPP session up."""

    name = "NotConnected"


class Conflict(RoostError):
    """The thing to create exists already, or the state forbids the change."""

    name = "Conflict"


class Forbidden(RoostError, PermissionError):
    """The caller may not do this (refused locally, not by a server)."""

    name = "Forbidden"


class Internal(RoostError):
    """An unexpected failure; the message says what was being done."""

    name = "Internal"


# What a person can do about the conditions servers answer most, added to the message.
_XMPP_HINTS = {
    "conflict": "it exists already on the server: use it, or choose another name",
    "item-not-found": "check the service, node and item names (the node may be gone)",
    "forbidden": "the account may not do this there: ask the node's owner for access",
    "not-allowed": "the service does not allow this here: check the node's configuration",
    "not-authorized": "the account may not do this there: ask the node's owner for access",
    "remote-server-timeout": (
        "the server may be overloaded or unreachable: try again later, or raise "
        "[xmpp] request_timeout in the configuration"
    ),
    "service-unavailable": "the service does not offer this: check the service's address",
    "feature-not-implemented": "the server does not implement this: use another way or server",
}


class XmppError(RoostError):
    """An error answered by an XMPP server.

    ``condition`` is the stanza error condition as the server sent it
    (``item-not-found``); ``name`` is ``Xmpp.<Condition>`` in CamelCase
    (``Xmpp.ItemNotFound``) since most bridges' names allow no hyphens. The message
    says, for the common conditions, what a person can do about it.
    """

    def __init__(self, condition: str, text: str = "", error_type: str = "cancel") -> None:
        self.condition = condition or "undefined-condition"
        self.text = text
        self.error_type = error_type
        camel = "".join(part.capitalize() for part in self.condition.split("-"))
        self.name = f"Xmpp.{camel}"
        detail = f": {text}" if text else ""
        hint = _XMPP_HINTS.get(self.condition)
        advice = f"; {hint}" if hint else ""
        super().__init__(f"the XMPP server answered {self.condition}{detail}{advice}")


class ConnectionFailed(RoostError):
    """A session could not be opened: unreachable server, bad credentials, no TLS.

    Surfaces as ``NotConnected`` with a message that says which.
    """

    name = "NotConnected"
