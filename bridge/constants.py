"""Every D-Bus name Roost uses: bus name, object path, interfaces, error prefix.

Names follow the D-Bus API design guide: the major version is in the bus name, the
interfaces live under it, and an incompatible change means ``org.roost.Backend2``.
"""

from __future__ import annotations

from typing import Final

BUS_NAME: Final = "org.roost.Backend1"
OBJECT_PATH: Final = "/org/roost/Backend1"

DAEMON_INTERFACE: Final = "org.roost.Backend1"
PROFILES_INTERFACE: Final = "org.roost.Backend1.Profiles"
STORAGE_INTERFACE: Final = "org.roost.Backend1.Storage"
PUBSUB_INTERFACE: Final = "org.roost.Backend1.Pubsub"
CACHE_INTERFACE: Final = "org.roost.Backend1.Cache"
CONTACTS_INTERFACE: Final = "org.roost.Backend1.Contacts"

ERROR_PREFIX: Final = "org.roost.Backend1.Error."
ERROR_INVALID_ARGUMENT: Final = ERROR_PREFIX + "InvalidArgument"
ERROR_NOT_FOUND: Final = ERROR_PREFIX + "NotFound"
ERROR_NOT_CONNECTED: Final = ERROR_PREFIX + "NotConnected"
ERROR_CONFLICT: Final = ERROR_PREFIX + "Conflict"
ERROR_FORBIDDEN: Final = ERROR_PREFIX + "Forbidden"
ERROR_INTERNAL: Final = ERROR_PREFIX + "Internal"
ERROR_XMPP_PREFIX: Final = ERROR_PREFIX + "Xmpp."

GLOBAL_PROFILE: Final = "@global@"
"""The ``profile`` argument of the Storage interface for values of no profile."""

PROPERTIES_INTERFACE: Final = "org.freedesktop.DBus.Properties"
