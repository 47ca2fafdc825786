"""Params: string settings by category and name, per profile or global."""

from __future__ import annotations

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.models import Param
from roost.storage.profiles import Store, affected_rows


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
        async with self.transaction("get_param", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            return await session.scalar(
                select(Param.value).where(
                    _scope(profile_id), Param.category == category, Param.name == name
                )
            )

    async def set_param(self, profile: str | None, category: str, name: str, value: str) -> None:
        """Set a param, creating it or replacing its value.

        Calls racing to create the same param all succeed: the last one's value stays.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> None:
            profile_id = self.profile_id_in(session, profile)
            row = session.scalar(
                select(Param).where(
                    _scope(profile_id), Param.category == category, Param.name == name
                )
            )
            if row is None:
                session.add(Param(profile_id=profile_id, category=category, name=name, value=value))
            else:
                row.value = value

        await self.write("set_param", work, again_on_conflict=True)

    async def claim_param(self, profile: str | None, category: str, name: str, value: str) -> str:
        """Set a param to ``value`` unless it holds a non-empty value already.

        Of calls racing to claim the same param, on this database by any daemon, exactly
        one sets it; the others find its value.

        Returns:
            The value the param holds now: ``value`` when this call set it.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> str:
            profile_id = self.profile_id_in(session, profile)
            where = (_scope(profile_id), Param.category == category, Param.name == name)
            # Conditional, so that of two writers that both read it empty only one
            # writes: PostgreSQL checks the condition again once the first has committed.
            claimed = session.execute(
                update(Param).where(*where, Param.value == "").values(value=value)
            )
            if affected_rows(claimed):
                return value
            held = session.scalar(select(Param.value).where(*where))
            if held is None:
                session.add(Param(profile_id=profile_id, category=category, name=name, value=value))
                session.flush()
                return value
            return held

        return await self.write("claim_param", work, again_on_conflict=True)

    async def list_params(self, profile: str | None, category: str) -> dict[str, str]:
        """Every param of a category, by name.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("list_params", write=False) as session:
            profile_id = await self.profile_id(session, profile)
            rows = await session.execute(
                select(Param.name, Param.value)
                .where(_scope(profile_id), Param.category == category)
                .order_by(Param.name)
            )
            return {name: value for name, value in rows}
