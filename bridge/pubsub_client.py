"""The client proxy's Pubsub and Cache calls (mixed into :class:`RoostClient`).

Records come back with their variants unwrapped (plain Python values); options and
queries may be given as plain values too, wrapped in the types the API documents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dbus_fast import Variant

from roost.bridge.constants import CACHE_INTERFACE, PUBSUB_INTERFACE
from roost.bridge.variants import RECORD_SIGNATURES, plain

# Types of the options and query keys frontends send (values not listed go as strings).
_OPTION_SIGNATURES = {
    "max_items": "u",
    "item_ids": "as",
    "before": "s",
    "after": "s",
    "use_cache": "b",
    "notify": "b",
    "subid": "s",
    "profiles": "as",
    "services": "as",
    "nodes": "as",
    "types": "as",
    "subtypes": "as",
    "fts": "s",
    "limit": "u",
    "offset": "u",
    "older_than": "d",
}


def wrap(value: Any) -> Variant:
    """A variant for a plain value, its type guessed (bool, int, float, str, lists, dicts)."""
    if isinstance(value, Variant):
        return value
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, Mapping):
        return Variant("a{sv}", {str(k): wrap(v) for k, v in value.items()})
    if isinstance(value, Sequence):
        items = list(value)
        if items and all(isinstance(v, str) for v in items):
            return Variant("as", items)
        if items and all(isinstance(v, Mapping) for v in items):
            return Variant("aa{sv}", [{str(k): wrap(v) for k, v in m.items()} for m in items])
        return Variant("av", [wrap(v) for v in items])
    raise TypeError(f"cannot send {value!r} over D-Bus")


def wrap_options(options: Mapping[str, Any]) -> dict[str, Variant]:
    """Options or a query as ``a{sv}``, with the documented type for each known key."""
    wrapped: dict[str, Variant] = {}
    for key, value in options.items():
        signature = _OPTION_SIGNATURES.get(key) or RECORD_SIGNATURES.get(key)
        if isinstance(value, Variant) or signature is None or key in ("parsed", "order_by"):
            wrapped[key] = wrap(value)
        else:
            wrapped[key] = Variant(signature, list(value) if signature == "as" else value)
    return wrapped


class PubsubCalls:
    """Pubsub and Cache members; the host class provides :meth:`call` and :meth:`subscribe`."""

    async def call(
        self, interface: str, member: str, signature: str = "", body: Sequence[Any] = ()
    ) -> list[Any]:
        """Call a member (provided by the client)."""
        raise NotImplementedError

    async def subscribe(
        self, interface: str, member: str, callback: Callable[..., None]
    ) -> Callable[[], None]:
        """Subscribe to a signal (provided by the client)."""
        raise NotImplementedError

    # org.roost.Backend1.Pubsub

    async def get_items(
        self, profile: str, service: str, node: str, **options: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``GetItems``: (items, metadata), both plain dictionaries."""
        body = await self.call(
            PUBSUB_INTERFACE,
            "GetItems",
            "sssa{sv}",
            [profile, service, node, wrap_options(options)],
        )
        return plain(body[0]), plain(body[1])

    async def publish(
        self,
        profile: str,
        service: str,
        node: str,
        item_id: str,
        payload_xml: str,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """``Publish``: returns the item id."""
        body = [profile, service, node, item_id, payload_xml, wrap_options(options or {})]
        return str((await self.call(PUBSUB_INTERFACE, "Publish", "sssssa{sv}", body))[0])

    async def retract(
        self,
        profile: str,
        service: str,
        node: str,
        item_ids: Sequence[str],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """``Retract``."""
        body = [profile, service, node, list(item_ids), wrap_options(options or {})]
        await self.call(PUBSUB_INTERFACE, "Retract", "sssasa{sv}", body)

    async def create_node(
        self, profile: str, service: str, node: str, config: Mapping[str, Any] | None = None
    ) -> str:
        """``CreateNode``: returns the node's name."""
        body = [profile, service, node, {k: wrap(v) for k, v in (config or {}).items()}]
        return str((await self.call(PUBSUB_INTERFACE, "CreateNode", "sssa{sv}", body))[0])

    async def delete_node(self, profile: str, service: str, node: str) -> None:
        """``DeleteNode``."""
        await self.call(PUBSUB_INTERFACE, "DeleteNode", "sss", [profile, service, node])

    async def purge_node(self, profile: str, service: str, node: str) -> None:
        """``PurgeNode``."""
        await self.call(PUBSUB_INTERFACE, "PurgeNode", "sss", [profile, service, node])

    async def get_node_config(self, profile: str, service: str, node: str) -> dict[str, Any]:
        """``GetNodeConfig``: field → value (a list for a multi-valued field)."""
        body = await self.call(PUBSUB_INTERFACE, "GetNodeConfig", "sss", [profile, service, node])
        return dict(plain(body[0]))

    async def set_node_config(
        self, profile: str, service: str, node: str, config: Mapping[str, Any]
    ) -> None:
        """``SetNodeConfig``."""
        body = [profile, service, node, {k: wrap(v) for k, v in config.items()}]
        await self.call(PUBSUB_INTERFACE, "SetNodeConfig", "sssa{sv}", body)

    async def subscribe_node(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> str:
        """``Subscribe``: returns the subscription id."""
        body = [profile, service, node, {k: wrap(v) for k, v in (options or {}).items()}]
        return str((await self.call(PUBSUB_INTERFACE, "Subscribe", "sssa{sv}", body))[0])

    async def unsubscribe_node(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """``Unsubscribe``."""
        body = [profile, service, node, wrap_options(options or {})]
        await self.call(PUBSUB_INTERFACE, "Unsubscribe", "sssa{sv}", body)

    async def get_subscriptions(
        self, profile: str, service: str, node: str = ""
    ) -> list[dict[str, Any]]:
        """``GetSubscriptions``."""
        body = await self.call(
            PUBSUB_INTERFACE, "GetSubscriptions", "sss", [profile, service, node]
        )
        return list(plain(body[0]))

    async def on_items_event(
        self, callback: Callable[[str, str, str, str, list[dict[str, Any]]], None]
    ) -> Callable[[], None]:
        """``ItemsEvent(profile, service, node, kind, items)``, items unwrapped."""

        def relay(profile: str, service: str, node: str, kind: str, items: Any) -> None:
            callback(profile, service, node, kind, plain(items))

        return await self.subscribe(PUBSUB_INTERFACE, "ItemsEvent", relay)

    # org.roost.Backend1.Cache

    async def search(self, **query: Any) -> list[dict[str, Any]]:
        """``Search``: e.g. ``search(fts="word", nodes=[...], limit=20)``."""
        body = await self.call(CACHE_INTERFACE, "Search", "a{sv}", [wrap_options(query)])
        return list(plain(body[0]))

    async def get_node_state(self, profile: str, service: str, node: str) -> dict[str, Any]:
        """``GetNodeState``."""
        body = await self.call(CACHE_INTERFACE, "GetNodeState", "sss", [profile, service, node])
        return dict(plain(body[0]))

    async def sync_node(self, profile: str, service: str, node: str) -> None:
        """``Sync``: returns once the sync started."""
        await self.call(CACHE_INTERFACE, "Sync", "sss", [profile, service, node])

    async def purge_cache(self, **filters: Any) -> int:
        """``Purge``: returns how many items went."""
        body = await self.call(CACHE_INTERFACE, "Purge", "a{sv}", [wrap_options(filters)])
        return int(body[0])

    async def reset_cache(self) -> None:
        """``Reset``."""
        await self.call(CACHE_INTERFACE, "Reset")

    async def list_analysers(self) -> list[dict[str, Any]]:
        """``ListAnalysers``."""
        return list(plain((await self.call(CACHE_INTERFACE, "ListAnalysers"))[0]))

    async def on_sync_state_changed(
        self, callback: Callable[[str, str, str, str], None]
    ) -> Callable[[], None]:
        """``SyncStateChanged(profile, service, node, state)``."""
        return await self.subscribe(CACHE_INTERFACE, "SyncStateChanged", callback)

    async def on_sync_progress(
        self, callback: Callable[[str, str, str, int, int], None]
    ) -> Callable[[], None]:
        """``SyncProgress(profile, service, node, done, total)``."""
        return await self.subscribe(CACHE_INTERFACE, "SyncProgress", callback)
