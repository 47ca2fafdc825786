"""``org.roost.Backend1.Cache``: search the cache, inspect and drive node syncs."""

from typing import Annotated

from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import dbus_method, dbus_signal

from roost.bridge.constants import CACHE_INTERFACE
from roost.bridge.interfaces.base import RoostInterface, name_args, roost_method
from roost.bridge.variants import plain, to_record, to_records
from roost.service.backend import Backend
from roost.service.events import Event, SyncProgress, SyncStateChanged

DBusRecords = Annotated[list[DBusDict], DBusSignature("aa{sv}")]
_FourStr = Annotated[tuple[str, str, str, str], DBusSignature("ssss")]
_ProgressArgs = Annotated[tuple[str, str, str, int, int], DBusSignature("sssuu")]


class CacheInterface(RoostInterface):
    """Cache-wide search, node states, syncs on demand, purge and reset."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(CACHE_INTERFACE, backend)
        self._unsubscribe = backend.events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop relaying the backend's events as signals."""
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SyncStateChanged):
            self.SyncStateChanged(event.profile, event.service, event.node, event.state)
        elif isinstance(event, SyncProgress):
            self.SyncProgress(event.profile, event.service, event.node, event.done, event.total)

    @dbus_method()
    @roost_method
    async def Search(self, query: DBusDict) -> DBusRecords:
        """Cached items matching ``query``, newest first unless ``order_by`` says."""
        return to_records(await self.backend.pubsub.search(plain(query)))

    @dbus_method()
    @roost_method
    async def GetNodeState(self, profile: DBusStr, service: DBusStr, node: DBusStr) -> DBusDict:
        """A node's cache state: state, analyser, type, subtype, item_count, synced_at…"""
        return to_record(await self.backend.pubsub.get_node_state(profile, service, node))

    @dbus_method()
    @roost_method
    async def Sync(self, profile: DBusStr, service: DBusStr, node: DBusStr) -> None:
        """(Re)synchronise a node now; returns once started (signals tell the rest)."""
        await self.backend.pubsub.sync(profile, service, node)

    @dbus_method()
    @roost_method
    async def Purge(self, filters: DBusDict) -> DBusUInt32:
        """Remove cached items matching ``filters``; returns how many went."""
        return await self.backend.pubsub.purge_cache(plain(filters))

    @dbus_method()
    @roost_method
    async def Reset(self) -> None:
        """Empty the cache."""
        await self.backend.pubsub.reset_cache()

    @dbus_method()
    @roost_method
    async def ListAnalysers(self) -> DBusRecords:
        """The analysers, in the order they are consulted."""
        return to_records(self.backend.pubsub.list_analysers())

    @dbus_signal()
    def SyncStateChanged(self, profile: str, service: str, node: str, state: str) -> _FourStr:
        """A cached node changed state (none, no_sync, in_progress, completed, error)."""
        return profile, service, node, state

    @dbus_signal()
    def SyncProgress(
        self, profile: str, service: str, node: str, done: int, total: int
    ) -> _ProgressArgs:
        """A sync stored ``done`` items of ``total`` (0 while unknown)."""
        return profile, service, node, done, total


name_args(CacheInterface.Search, "items")
name_args(CacheInterface.GetNodeState, "state")
name_args(CacheInterface.Purge, "removed")
name_args(CacheInterface.ListAnalysers, "analysers")
name_args(CacheInterface.SyncStateChanged, "profile", "service", "node", "state")
name_args(CacheInterface.SyncProgress, "profile", "service", "node", "done", "total")
