"""Params: string settings by category and name, per profile or global."""

from __future__ import annotations

from sqlalchemy import ColumnElement, select

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.models import Param
from roost.storage.profiles import Store


def _scope(profile_id: int | None) -> ColumnElement[bool]:
    # "= NULL" is never true in SQL: the global scope needs IS NULL.
    if profile_id is None:
        return Param.profile_id.is_(None)
    return Param.profile_id == profile_id


@stores_complete_on_cancel
class ParamStore(Store):
    """Read and write params. A ``profile`` of None means the global scope."""

    async def get_param(self, profile: str | None, category: str, name: str) -> str | None:
        """The value of a param.

        Args:
            profile: the profile's name, or None for a global param.
            category: the param's category.
            name: the param's name.

        Returns:
            The value, or None when the param was never set.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("get_param") as session:
            profile_id = await self.profile_id(session, profile)
            return await session.scalar(
                select(Param.value).where(
                    _scope(profile_id), Param.category == category, Param.name == name
                )
            )

    async def set_param(self, profile: str | None, category: str, name: str, value: str) -> None:
        """Set a param, creating it or replacing its value.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("set_param") as session:
            profile_id = await self.profile_id(session, profile)
            row = await session.scalar(
                select(Param).where(
                    _scope(profile_id), Param.category == category, Param.name == name
                )
            )
            if row is None:
                session.add(Param(profile_id=profile_id, category=category, name=name, value=value))
            else:
                row.value = value

    async def list_params(self, profile: str | None, category: str) -> dict[str, str]:
        """Every param of a category, by name.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("list_params") as session:
            profile_id = await self.profile_id(session, profile)
            rows = await session.execute(
                select(Param.name, Param.value)
                .where(_scope(profile_id), Param.category == category)
                .order_by(Param.name)
            )
            return {name: value for name, value in rows}
