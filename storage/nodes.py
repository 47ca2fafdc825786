"""Pubsub nodes known to the cache: their analysis, sync state and subscription.

Items belong to a node (ON DELETE CASCADE): deleting a node, or resetting every node,
removes their cached items too; the item store (:mod:`roost.storage.items`) handles
items themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.engines import engine_for
from roost.storage.errors import RowNotFound
from roost.storage.models import Profile, PubsubNode
from roost.storage.profiles import Store, affected_rows
from roost.storage.records import NodeRecord, check_node_state


def _with_profile() -> Select[PubsubNode, str]:
    return select(PubsubNode, Profile.name).join(Profile, PubsubNode.profile_id == Profile.id)


def _record(node: PubsubNode, profile: str) -> NodeRecord:
    return NodeRecord(
        id=node.id,
        profile=profile,
        profile_id=node.profile_id,
        service=node.service,
        name=node.name,
        analyser=node.analyser,
        type=node.type,
        subtype=node.subtype,
        sync_state=node.sync_state,
        sync_state_updated=node.sync_state_updated,
        subscribed=node.subscribed,
        extra=dict(node.extra),
    )


async def _find(
    session: AsyncSession, profile_id: int, service: str, name: str
) -> tuple[PubsubNode, str] | None:
    return await session.run_sync(_find_in, profile_id, service, name)


def _find_in(
    session: Session, profile_id: int, service: str, name: str
) -> tuple[PubsubNode, str] | None:
    row = session.execute(
        _with_profile().where(
            PubsubNode.profile_id == profile_id,
            PubsubNode.service == service,
            PubsubNode.name == name,
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def _by_id(session: AsyncSession, node_id: int) -> tuple[PubsubNode, str]:
    return await session.run_sync(_by_id_in, node_id)


def _by_id_in(session: Session, node_id: int) -> tuple[PubsubNode, str]:
    row = session.execute(_with_profile().where(PubsubNode.id == node_id)).first()
    if row is None:
        raise RowNotFound(f"no pubsub node with id {node_id}")
    return row[0], row[1]


def _merge_extra(session: Session, node_id: int, extra: Mapping[str, Any]) -> None:
    """Set ``extra``'s keys in the node's extra data in the database itself, in one
    statement: a read-modify-write here would lose what another writer (another task,
    another daemon on a shared database) merged between the read and the write."""
    database = engine_for(session.get_bind())
    session.execute(
        update(PubsubNode)
        .where(PubsubNode.id == node_id)
        .values(extra=database.json_merge(PubsubNode.extra, extra))
        .execution_options(synchronize_session=False)
    )


def _changed(node_id: int, change: Callable[[PubsubNode], None]) -> Callable[[Session], NodeRecord]:
    """A write that applies ``change`` to the node and returns it as it is then."""

    def work(session: Session) -> NodeRecord:
        node, profile = _by_id_in(session, node_id)
        change(node)
        session.flush()
        return _record(node, profile)

    return work


@stores_complete_on_cancel
class NodeStore(Store):
    """Create, find and change pubsub nodes.

    Each write runs whole in one call (:meth:`Store.write`); a delete that cascades
    through the items cached under a node is a large one (off the event loop's thread
    on SQLite).
    """

    async def get_or_create_node(self, profile: str, service: str, name: str) -> NodeRecord:
        """The node ``name`` of ``service`` as seen by ``profile``, created if new.

        A new node starts in sync state ``none``, unanalysed and unsubscribed.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> NodeRecord:
            profile_id = self.profile_id_in(session, profile)
            assert profile_id is not None  # a name always resolves to an id
            found = _find_in(session, profile_id, service, name)
            if found is not None:
                return _record(*found)
            node = PubsubNode(
                profile_id=profile_id,
                service=service,
                name=name,
                sync_state="none",
                sync_state_updated=time.time(),
                subscribed=False,
                extra={},
            )
            session.add(node)
            session.flush()
            return _record(node, profile)

        # Another call may create it between the read and the insert: then it is read.
        return await self.write("get_or_create_node", work, again_on_conflict=True)

    async def get_node(self, profile: str, service: str, name: str) -> NodeRecord | None:
        """The node, or None when the cache does not know it.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("get_node", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            assert profile_id is not None
            found = await _find(session, profile_id, service, name)
            return None if found is None else _record(*found)

    async def get_node_by_id(self, node_id: int) -> NodeRecord:
        """The node with that id.

        Raises:
            RowNotFound: no node has that id.
        """
        async with self.transaction("get_node_by_id", write=False) as session:
            return _record(*await _by_id(session, node_id))

    async def set_analysis(
        self, node_id: int, analyser: str | None, type: str | None, subtype: str | None
    ) -> NodeRecord:
        """Record what the analysers decided about a node.

        Args:
            node_id: the node.
            analyser: the name of the analyser that matched, None when none did.
            type: the node's type (``blog``…), or None.
            subtype: a refinement of the type, or None.

        Returns:
            The node as it is now.

        Raises:
            RowNotFound: no node has that id.
        """

        def change(node: PubsubNode) -> None:
            node.analyser, node.type, node.subtype = analyser, type, subtype

        return await self.write("set_analysis", _changed(node_id, change))

    async def set_sync_state(
        self, node_id: int, state: str, *, extra: Mapping[str, Any] | None = None
    ) -> NodeRecord:
        """Change a node's sync state and stamp when it changed.

        Args:
            node_id: the node.
            state: one of ``none``, ``no_sync``, ``in_progress``, ``completed``, ``error``.
            extra: keys merged into the node's ``extra`` (the reason of an error…).

        Returns:
            The node as it is now.

        Raises:
            ValueError: the state is not one of the above.
            RowNotFound: no node has that id.
        """
        check_node_state(state)

        def work(session: Session) -> NodeRecord:
            if extra:
                _merge_extra(session, node_id, extra)
            node, profile = _by_id_in(session, node_id)
            node.sync_state = state
            node.sync_state_updated = time.time()
            session.flush()
            return _record(node, profile)

        return await self.write("set_sync_state", work)

    async def set_subscribed(self, node_id: int, subscribed: bool) -> NodeRecord:
        """Record whether Roost holds a subscription that keeps the node current.

        Raises:
            RowNotFound: no node has that id.
        """

        def change(node: PubsubNode) -> None:
            node.subscribed = subscribed

        return await self.write("set_subscribed", _changed(node_id, change))

    async def update_extra(self, node_id: int, extra: Mapping[str, Any]) -> NodeRecord:
        """Merge ``extra`` into the node's extra data (a key set to None stays, as None).

        Raises:
            RowNotFound: no node has that id.
        """

        def work(session: Session) -> NodeRecord:
            if extra:
                _merge_extra(session, node_id, extra)
            return _record(*_by_id_in(session, node_id))

        return await self.write("update_extra", work)

    async def list_nodes(
        self, profile: str | None = None, states: Sequence[str] | None = None
    ) -> list[NodeRecord]:
        """Nodes, optionally of one profile and in some states, ordered by id.

        Raises:
            ValueError: a state is not a valid sync state.
            RowNotFound: no profile has that name.
        """
        query = _with_profile().order_by(PubsubNode.id)
        if states is not None:
            query = query.where(
                PubsubNode.sync_state.in_([check_node_state(state) for state in states])
            )
        async with self.transaction("list_nodes", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            if profile_id is not None:
                query = query.where(PubsubNode.profile_id == profile_id)
            rows = await session.execute(query)
            return [_record(node, name) for node, name in rows]

    async def delete_node(self, node_id: int) -> bool:
        """Delete a node and its cached items.

        Returns:
            True when the node existed.
        """

        def work(session: Session) -> bool:
            result = session.execute(
                delete(PubsubNode)
                .where(PubsubNode.id == node_id)
                .execution_options(synchronize_session=False)
            )
            return affected_rows(result) > 0

        # Its items go with it (ON DELETE CASCADE): as many as the node held.
        return await self.write("delete_node", work, large=True)

    async def reset_all_nodes(self) -> int:
        """Delete every node, and so every cached item (the cache's ``Reset``).

        Returns:
            How many nodes were deleted.
        """

        def work(session: Session) -> int:
            count = session.scalar(select(func.count()).select_from(PubsubNode))
            session.execute(delete(PubsubNode).execution_options(synchronize_session=False))
            return int(count or 0)

        return await self.write("reset_all_nodes", work, large=True)
