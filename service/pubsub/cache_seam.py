"""The hook through which a pubsub cache answers and learns (built separately)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from roost.service.events import ItemsEvent
from roost.service.pubsub.model import ItemsReply, ItemsRequest


class PubsubCache(Protocol):
    """What PubsubService asks of a cache."""

    async def answer(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply | None:
        """The cached answer to ``request``, or None to go to the server."""

    async def answer_offline(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply | None:
        """The answer for a profile that is offline, from the node's complete copy with
        ``cache_age`` set; None when the cache holds no such copy that answers ``request``."""

    async def server_answered(
        self,
        profile: str,
        service: str,
        node: str,
        request: ItemsRequest,
        answer: Awaitable[ItemsReply],
    ) -> ItemsReply:
        """Called as ``request`` goes to the server, with the server's ``answer`` to
        await (the cache's own reads may go on meanwhile): returns the reply as the
        cache would give it (``parsed`` added for a node with a parser); the cache
        analyses the node here."""

    def accepts(self, event: ItemsEvent) -> bool:
        """Whether the event comes from a service the profile chose to hear; an event
        that does not is dropped before anything is done with it."""

    async def apply_event(self, event: ItemsEvent) -> ItemsEvent | None:
        """Called before ``event`` is published, so the cache is current first.

        May return the event to publish instead (its items with ``parsed`` added, for a
        node whose analyser has a parser); None publishes ``event`` as it is.
        """

    async def user_subscribed(self, profile: str, service: str, node: str) -> None:
        """The person subscribed the account to the node (Pubsub.Subscribe)."""

    async def user_unsubscribed(self, profile: str, service: str, node: str) -> None:
        """The person removed the account's subscription to the node."""

    def hold(self, service: str, node: str, item_ids: list[str] | None, *, kind: str) -> None:
        """Roost is about to change the node on the server (``item_ids``, or None for
        any item): cached answers wait until the change's notification is applied."""

    def unhold(self, service: str, node: str) -> None:
        """The change announced by :meth:`hold` failed: answer from the cache again."""
