"""``org.roost.Backend1.Pubsub``: XMPP publish-subscribe without speaking XMPP."""

from collections import OrderedDict
from typing import Annotated, Any

from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr
from dbus_fast.service import dbus_method, dbus_signal

from roost.bridge.constants import PUBSUB_INTERFACE
from roost.bridge.interfaces.base import DBusStrList, RoostInterface, name_args, roost_method
from roost.bridge.item_bounds import event_batches, item_records
from roost.bridge.variants import form_values, plain, to_record, to_records
from roost.service.backend import Backend
from roost.service.events import Event, ItemsEvent
from roost.service.pubsub.model import ItemsReply

# Replies whose marshalled items are kept (the reply is kept too, so its id stays its own):
# the most recent ones, which a repeated request asks again. Each record is a few objects
# the garbage collector walks (see roost.service.cache.currency.HOT_ITEMS).
MARSHALLED_REPLIES = 64

DBusRecords = Annotated[list[DBusDict], DBusSignature("aa{sv}")]
_ItemsReply = Annotated[list[Any], DBusSignature("aa{sv}a{sv}")]
_ItemsEventArgs = Annotated[tuple[str, str, str, str, list[DBusDict]], DBusSignature("ssssaa{sv}")]


class PubsubInterface(RoostInterface):
    """Items, nodes and subscriptions of pubsub services and PEP, for connected profiles.

    An empty ``profile`` is the default profile; an empty ``service`` the profile's own
    PEP service.
    """

    def __init__(self, backend: Backend) -> None:
        super().__init__(PUBSUB_INTERFACE, backend)
        self._marshalled: OrderedDict[int, tuple[ItemsReply, list[DBusDict]]] = OrderedDict()
        self._unsubscribe = backend.events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop relaying the backend's events as signals."""
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ItemsEvent):
            # A large notification is several signals, each under the signal bound.
            for batch in event_batches(event.items):
                items = to_records(batch)
                self.ItemsEvent(event.profile, event.service, event.node, event.kind, items)

    @dbus_method()
    @roost_method
    async def GetItems(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, options: DBusDict
    ) -> _ItemsReply:
        """The node's items (oldest first) and the paging metadata."""
        reply = await self.backend.pubsub.get_items(profile, service, node, plain(options))
        # The cache hands out the same reply object for a repeated request while the
        # node is unchanged: marshal each one once.
        done = self._marshalled.get(id(reply))
        if done is not None and done[0] is reply:
            items = done[1]
        else:
            items = item_records(reply.items)
            self._marshalled[id(reply)] = (reply, items)
            if len(self._marshalled) > MARSHALLED_REPLIES:
                self._marshalled.popitem(last=False)
        return [items, to_record(reply.metadata())]

    @dbus_method()
    @roost_method
    async def Publish(
        self,
        profile: DBusStr,
        service: DBusStr,
        node: DBusStr,
        item_id: DBusStr,
        payload_xml: DBusStr,
        options: DBusDict,
    ) -> DBusStr:
        """Publish an item; returns its id (chosen by the server when ``item_id`` is empty)."""
        published: str = await self.backend.pubsub.publish(
            profile, service, node, item_id, payload_xml, plain(options)
        )
        return published

    @dbus_method()
    @roost_method
    async def Retract(
        self,
        profile: DBusStr,
        service: DBusStr,
        node: DBusStr,
        item_ids: DBusStrList,
        options: DBusDict,
    ) -> None:
        """Retract items."""
        await self.backend.pubsub.retract(profile, service, node, list(item_ids), plain(options))

    @dbus_method()
    @roost_method
    async def CreateNode(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, config: DBusDict
    ) -> DBusStr:
        """Create a node (empty name: the server picks one); returns its name."""
        created: str = await self.backend.pubsub.create_node(profile, service, node, plain(config))
        return created

    @dbus_method()
    @roost_method
    async def DeleteNode(self, profile: DBusStr, service: DBusStr, node: DBusStr) -> None:
        """Delete a node and its items."""
        await self.backend.pubsub.delete_node(profile, service, node)

    @dbus_method()
    @roost_method
    async def PurgeNode(self, profile: DBusStr, service: DBusStr, node: DBusStr) -> None:
        """Remove every item of a node."""
        await self.backend.pubsub.purge_node(profile, service, node)

    @dbus_method()
    @roost_method
    async def GetNodeConfig(self, profile: DBusStr, service: DBusStr, node: DBusStr) -> DBusDict:
        """The node's configuration: ``s`` per single value, ``as`` per multi-valued field."""
        config: dict[str, Any] = await self.backend.pubsub.get_node_config(profile, service, node)
        return form_values(config)

    @dbus_method()
    @roost_method
    async def SetNodeConfig(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, config: DBusDict
    ) -> None:
        """Change fields of the node's configuration."""
        await self.backend.pubsub.set_node_config(profile, service, node, plain(config))

    @dbus_method()
    @roost_method
    async def Subscribe(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, options: DBusDict
    ) -> DBusStr:
        """Subscribe the profile to a node; returns the subscription id (may be empty)."""
        subid: str = await self.backend.pubsub.subscribe(profile, service, node, plain(options))
        return subid

    @dbus_method()
    @roost_method
    async def Unsubscribe(
        self, profile: DBusStr, service: DBusStr, node: DBusStr, options: DBusDict
    ) -> None:
        """Unsubscribe the profile (``subid`` in options picks one subscription)."""
        await self.backend.pubsub.unsubscribe(profile, service, node, plain(options))

    @dbus_method()
    @roost_method
    async def GetSubscriptions(
        self, profile: DBusStr, service: DBusStr, node: DBusStr
    ) -> DBusRecords:
        """The profile's subscriptions at the service (to ``node`` only, when given)."""
        subscriptions: list[dict[str, str]] = await self.backend.pubsub.get_subscriptions(
            profile, service, node
        )
        return to_records(subscriptions)

    @dbus_signal()
    def ItemsEvent(
        self, profile: str, service: str, node: str, kind: str, items: list[DBusDict]
    ) -> _ItemsEventArgs:
        """A notification: ``kind`` is items, retract, purge or delete."""
        return profile, service, node, kind, items


name_args(PubsubInterface.GetItems, "items", "metadata")
name_args(PubsubInterface.Publish, "item_id")
name_args(PubsubInterface.CreateNode, "node")
name_args(PubsubInterface.GetNodeConfig, "config")
name_args(PubsubInterface.Subscribe, "subid")
name_args(PubsubInterface.GetSubscriptions, "subscriptions")
name_args(PubsubInterface.ItemsEvent, "profile", "service", "node", "kind", "items")
