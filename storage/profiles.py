"""Profiles: the XMPP accounts the daemon keeps, and the store base the other stores share.

Every other per-profile table refers to a profile by id; callers name profiles, so the
name-to-id lookup lives here beside the transaction helper every store uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, nullcontext
from typing import Any, TypeVar, cast

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.errors import AlreadyExists, RowNotFound
from roost.storage.models import Profile
from roost.storage.records import ProfileRecord
from roost.storage.write_turn import write_turn_for
from roost.storage.writes import SessionWrites, WriteRunner

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Store:
    """Base of the stores: one session per named transaction.

    Args:
        engine: the engine, or a session factory bound to it (tests and the facade may
            share one factory between stores).
    """

    def __init__(
        self,
        engine: AsyncEngine | async_sessionmaker[AsyncSession],
        writes: WriteRunner | None = None,
    ) -> None:
        if isinstance(engine, async_sessionmaker):
            self._sessions = engine
            bound: AsyncEngine = engine.kw["bind"]
        else:
            # Records are built before commit returns; nothing is read after it.
            self._sessions = async_sessionmaker(engine, expire_on_commit=False)
            bound = engine
        self._write_turn = write_turn_for(bound)
        self._writes = writes or SessionWrites(bound)

    async def write(
        self,
        name: str,
        work: Callable[[Session], _T],
        *,
        again_on_conflict: bool = False,
        large: bool = False,
    ) -> _T:
        """Run ``work``, a plain function given a session, as one write transaction named
        ``name``, in one call (see :mod:`roost.storage.writes`).

        ``again_on_conflict``: run it once more if a unique key conflicted, for a write
        that reads a row, then inserts it when it is missing.
        ``large``: the write does much work, and should not run on the event loop's
        thread.
        """
        return await self._writes.run(name, work, again_on_conflict=again_on_conflict, large=large)

    @asynccontextmanager
    async def transaction(self, name: str, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success, logged under ``name``.

        The name says in the logs which store call a slow or failed transaction was.
        A ``write`` transaction first waits for the database's write turn, where it has
        one (see :mod:`roost.storage.write_turn`).
        """
        started = time.perf_counter()
        turn = self._write_turn.hold() if write and self._write_turn else nullcontext()
        try:
            async with turn, self._sessions() as session, session.begin():
                yield session
        except Exception:
            logger.debug("transaction %s failed after %.1f ms", name, _ms_since(started))
            raise
        logger.debug("transaction %s took %.1f ms", name, _ms_since(started))

    @staticmethod
    async def profile_id(session: AsyncSession, profile: str | None) -> int | None:
        """The id of the profile named ``profile``; None stays None (global scope).

        Raises:
            RowNotFound: no profile has that name.
        """
        return await session.run_sync(Store.profile_id_in, profile)

    @staticmethod
    def profile_id_in(session: Session, profile: str | None) -> int | None:
        """:meth:`profile_id` for a write's (synchronous) session."""
        if profile is None:
            return None
        found = session.scalar(select(Profile.id).where(Profile.name == profile))
        if found is None:
            raise RowNotFound(f"no profile named {profile!r}")
        return found


def affected_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched."""
    # DML results are cursor results; Session.execute is typed with the general Result.
    return cast(CursorResult[Any], result).rowcount


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _record(row: Profile) -> ProfileRecord:
    return ProfileRecord(
        id=row.id,
        name=row.name,
        jid=row.jid,
        password=row.password,
        options=dict(row.options),
        created=row.created,
    )


@stores_complete_on_cancel
class ProfileStore(Store):
    """Create, read, change and delete profiles."""

    async def create_profile(
        self, name: str, jid: str, password: str, options: Mapping[str, Any] | None = None
    ) -> ProfileRecord:
        """Create a profile.

        Args:
            name: the profile's unique name.
            jid: the account's bare JID.
            password: the account's password (stored as given; the file is 0600).
            options: connection overrides and flags (JSON-able).

        Returns:
            The new profile.

        Raises:
            AlreadyExists: a profile has that name.
        """

        def work(session: Session) -> ProfileRecord:
            exists = session.scalar(select(Profile.id).where(Profile.name == name))
            if exists is not None:
                raise AlreadyExists(f"a profile named {name!r} exists already")
            row = Profile(
                name=name,
                jid=jid,
                password=password,
                options=dict(options or {}),
                created=time.time(),
            )
            session.add(row)
            session.flush()
            return _record(row)

        try:
            return await self.write("create_profile", work)
        except IntegrityError as exc:  # created by a concurrent call since the check
            raise AlreadyExists(f"a profile named {name!r} exists already") from exc

    async def get_profile(self, name: str) -> ProfileRecord:
        """The profile named ``name``.

        Raises:
            RowNotFound: no profile has that name.
        """
        async with self.transaction("get_profile", write=False) as session:
            row = await session.scalar(select(Profile).where(Profile.name == name))
            if row is None:
                raise RowNotFound(f"no profile named {name!r}")
            return _record(row)

    async def list_profiles(self) -> list[ProfileRecord]:
        """Every profile, ordered by name."""
        async with self.transaction("list_profiles", write=False) as session:
            rows = await session.scalars(select(Profile).order_by(Profile.name))
            return [_record(row) for row in rows]

    async def update_profile_options(self, name: str, options: Mapping[str, Any]) -> ProfileRecord:
        """Replace the options of the profile named ``name``.

        Returns:
            The profile as it is now.

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> ProfileRecord:
            row = session.scalar(select(Profile).where(Profile.name == name))
            if row is None:
                raise RowNotFound(f"no profile named {name!r}")
            row.options = dict(options)
            session.flush()
            return _record(row)

        return await self.write("update_profile_options", work)

    async def delete_profile(self, name: str) -> None:
        """Delete a profile with its params, values, nodes, cached items and contacts.

        The database cascades the delete (foreign keys with ON DELETE CASCADE).

        Raises:
            RowNotFound: no profile has that name.
        """

        def work(session: Session) -> None:
            result = session.execute(
                delete(Profile)
                .where(Profile.name == name)
                .execution_options(synchronize_session=False)
            )
            if not affected_rows(result):
                raise RowNotFound(f"no profile named {name!r}")

        # Everything of the profile goes with it (ON DELETE CASCADE): its whole cache.
        await self.write("delete_profile", work, large=True)
