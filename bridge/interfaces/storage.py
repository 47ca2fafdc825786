"""``org.roost.Backend1.Storage``: parameters, the namespaced key/value store, and copies
of the whole database."""

from typing import Annotated

from dbus_fast import Variant
from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr, DBusVariant
from dbus_fast.service import dbus_method, dbus_signal

from roost.bridge.constants import STORAGE_INTERFACE
from roost.bridge.interfaces.base import (
    DBusStrDict,
    DBusStrList,
    RoostInterface,
    name_args,
    roost_method,
)
from roost.bridge.marshal import MarshalError, json_to_variant, variant_to_json
from roost.bridge.variants import plain
from roost.service.backend import Backend
from roost.service.errors import Internal, InvalidArgument
from roost.service.events import Event, ParamChanged

_FourStr = Annotated[tuple[str, str, str, str], DBusSignature("ssss")]
DBusRecords = Annotated[list[DBusDict], DBusSignature("aa{sv}")]


class StorageInterface(RoostInterface):
    """Params per profile or global, and the key/value store for frontends and plugins."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(STORAGE_INTERFACE, backend)
        self._unsubscribe = backend.events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop relaying the backend's events as signals."""
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ParamChanged):
            self.ParamChanged(event.profile, event.category, event.name, event.value)

    @dbus_method()
    @roost_method
    async def GetParam(self, profile: DBusStr, category: DBusStr, name: DBusStr) -> DBusStr:
        """A parameter's value; NotFound when it was never set."""
        return await self.backend.settings.get_param(profile, category, name)

    @dbus_method()
    @roost_method
    async def SetParam(
        self, profile: DBusStr, category: DBusStr, name: DBusStr, value: DBusStr
    ) -> None:
        """Set a parameter; ParamChanged announces it."""
        await self.backend.settings.set_param(profile, category, name, value)

    @dbus_method()
    @roost_method
    async def ListParams(self, profile: DBusStr, category: DBusStr) -> DBusStrDict:
        """Every parameter of a category, name to value."""
        return await self.backend.settings.list_params(profile, category)

    @dbus_method()
    @roost_method
    async def GetValues(self, profile: DBusStr, namespace: DBusStr, keys: DBusStrList) -> DBusDict:
        """The stored values of ``keys`` (all when empty); missing keys are left out."""
        found = await self.backend.settings.get_values(profile, namespace, keys)
        values: dict[str, Variant] = {}
        for key, (signature, value) in found.items():
            try:
                values[key] = json_to_variant(signature, value)
            except MarshalError as err:
                raise Internal(
                    f"the stored value {namespace}/{key} is damaged ({err}); DeleteValue "
                    "removes it, then SetValue stores it again"
                ) from None
        return values

    @dbus_method()
    @roost_method
    async def SetValue(
        self, profile: DBusStr, namespace: DBusStr, key: DBusStr, value: DBusVariant
    ) -> None:
        """Store a value with its D-Bus type."""
        try:
            signature, encoded = variant_to_json(value)
        except MarshalError as err:
            raise InvalidArgument(str(err)) from None
        await self.backend.settings.set_value(profile, namespace, key, signature, encoded)

    @dbus_method()
    @roost_method
    async def DeleteValue(self, profile: DBusStr, namespace: DBusStr, key: DBusStr) -> None:
        """Remove a stored value; NotFound when there is none."""
        await self.backend.settings.delete_value(profile, namespace, key)

    @dbus_method()
    @roost_method
    async def CopyDatabase(self, url: DBusStr, options: DBusDict) -> DBusRecords:
        """Copy the whole database to ``url`` (empty unless ``replace``), in one read
        snapshot, and check each table's row count and checksum; one record per table."""
        copied = await self.backend.database_copies.copy(url, plain(options))
        return [
            {
                "table": Variant("s", table.table),
                "rows": Variant("t", table.rows),
                "checksum": Variant("s", table.checksum),
                "seconds": Variant("d", table.seconds),
            }
            for table in copied
        ]

    @dbus_signal()
    def ParamChanged(self, profile: str, category: str, name: str, value: str) -> _FourStr:
        """A parameter was set (``profile`` is ``@global@`` for a global one)."""
        return profile, category, name, value


name_args(StorageInterface.GetParam, "value")
name_args(StorageInterface.ListParams, "params")
name_args(StorageInterface.GetValues, "values")
name_args(StorageInterface.CopyDatabase, "tables")
name_args(StorageInterface.ParamChanged, "profile", "category", "name", "value")
