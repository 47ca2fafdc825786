"""The namespaced key/value store for frontends and plugins, per profile or global.

Each value keeps the type tag its writer gave (the D-Bus bridge writes the D-Bus
signature), so that it can be handed back with the same type: JSON alone cannot tell an
``int32`` from a ``uint64``, or a struct from an array. Values are stored as JSON text
encoded here, so that integers of any size come back exact on every dialect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.models import StoredValue
from roost.storage.profiles import Store, affected_rows
from roost.storage.records import TypedValue


def _scope(profile_id: int | None, namespace: str) -> ColumnElement[bool]:
    # "= NULL" is never true in SQL: the global scope needs IS NULL.
    owner = (
        StoredValue.profile_id.is_(None)
        if profile_id is None
        else StoredValue.profile_id == profile_id
    )
    return owner & (StoredValue.namespace == namespace)


@stores_complete_on_cancel
class ValueStore(Store):
    """Read, write and delete namespaced values. A ``profile`` of None means global."""

    async def get_values(
        self, profile: str | None, namespace: str, keys: Sequence[str] = ()
    ) -> dict[str, TypedValue]:
        """Values of a namespace.

        Args:
            profile: the profile's name, or None for the global scope.
            namespace: the namespace the keys live in.
            keys: the keys wanted; empty for every key of the namespace.

        Returns:
            The values found, by key; a key that was never set is simply absent.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("get_values", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            query = select(StoredValue.key, StoredValue.value_type, StoredValue.value).where(
                _scope(profile_id, namespace)
            )
            if keys:
                query = query.where(StoredValue.key.in_(list(keys)))
            rows = await session.execute(query.order_by(StoredValue.key))
            return {key: TypedValue(value_type, json.loads(text)) for key, value_type, text in rows}

    async def set_value(
        self, profile: str | None, namespace: str, key: str, value_type: str, value: Any
    ) -> None:
        """Set a value, creating it or replacing it.

        Args:
            profile: the profile's name, or None for the global scope.
            namespace: the namespace of the key.
            key: the key.
            value_type: an opaque type tag, handed back with the value.
            value: a JSON-able value (tuples come back as lists; NaN and infinities
                are refused, JSON has no spelling for them).

        Raises:
            RowNotFound: no profile has that name.
            ValueError: the value cannot be written as JSON.
        """
        try:
            stored = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except TypeError as exc:
            raise ValueError(f"value of {namespace}/{key} is not JSON-able: {exc}") from exc

        def work(session: Session) -> None:
            profile_id = self.profile_id_in(session, profile)
            row = session.scalar(
                select(StoredValue).where(_scope(profile_id, namespace), StoredValue.key == key)
            )
            if row is None:
                session.add(
                    StoredValue(
                        profile_id=profile_id,
                        namespace=namespace,
                        key=key,
                        value_type=value_type,
                        value=stored,
                    )
                )
            else:
                row.value_type = value_type
                row.value = stored

        await self.write("set_value", work, again_on_conflict=True)

    async def delete_value(self, profile: str | None, namespace: str, key: str) -> bool:
        """Delete a value.

        Returns:
            True when the value existed.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> bool:
            result = session.execute(
                delete(StoredValue)
                .where(
                    _scope(self.profile_id_in(session, profile), namespace), StoredValue.key == key
                )
                .execution_options(synchronize_session=False)
            )
            return affected_rows(result) > 0

        return await self.write("delete_value", work)
