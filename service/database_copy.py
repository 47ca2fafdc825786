"""Copies of the daemon's database, made while it serves (``CopyDatabase`` on the bus).

The copy is the storage layer's (:func:`roost.storage.copy.copy_database`): one read
snapshot of the open database, so the daemon goes on serving and writing meanwhile, and
what it writes after the copy began is not in the copy. This module checks the caller's
arguments, lets one copy run at a time, and turns the storage layer's refusals into the
service's errors, each with a message a person can act on:

- a target that is no database Roost can copy to (a malformed URL, another kind of
  database, an in-memory or relative SQLite file, the daemon's own database):
  :class:`InvalidArgument`;
- a target that holds rows (without ``replace``), or whose schema Roost will not touch,
  or a copy already running: :class:`Conflict`;
- a server that cannot be reached or refuses the user: :class:`NotConnected`;
- a copy that failed half-way or that does not read back as its source: :class:`Internal`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roost.service.errors import Conflict, Internal, InvalidArgument, NotConnected
from roost.storage.copy import (
    CopyError,
    InvalidTarget,
    TargetNotEmpty,
    TargetUnavailable,
    copy_database,
    target_url,
)
from roost.storage.database import Database
from roost.storage.errors import DatabaseTooNew, StorageError
from roost.storage.migrate import UnmanagedDatabase

log = logging.getLogger(__name__)

#: The options ``CopyDatabase`` takes, with their types.
COPY_OPTIONS: dict[str, type] = {"replace": bool}
#: A URL longer than this is refused before anything is tried.
MAX_URL_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class CopiedTable:
    """One table of a finished copy: its rows, their checksum (SHA-256, the same on the
    source and the copy), and how long copying and checking it took."""

    table: str
    rows: int
    checksum: str
    seconds: float


class DatabaseCopies:
    """Copies the daemon's open database to another database, one copy at a time."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._running = asyncio.Lock()

    async def copy(self, url: str, options: Mapping[str, Any]) -> list[CopiedTable]:
        """Copy every row to the database at ``url`` and check the copy, table by table.

        Args:
            url: the target: ``sqlite:////absolute/path`` (created if missing) or
                ``postgresql://user[:password]@host[:port]/dbname`` (an existing
                database, empty or with Roost's schema).
            options: ``replace`` (bool): empty a target that holds rows first.

        Returns:
            Every table, in the order copied.

        Raises:
            InvalidArgument, Conflict, NotConnected, Internal: see the module.
        """
        replace = _replace_option(options)
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
            raise InvalidArgument(f"the URL must be text of at most {MAX_URL_LENGTH} characters")
        try:
            target = target_url(url)
        except InvalidTarget as err:
            raise InvalidArgument(str(err)) from None
        shown = target.render_as_string(hide_password=True)
        if self._running.locked():
            raise Conflict("a copy of the database is running already: wait for its end")
        async with self._running:
            log.info("copying the database to %s (replace: %s)", shown, replace)
            try:
                report = await copy_database(self._db, target, replace=replace)
            except InvalidTarget as err:
                raise InvalidArgument(str(err)) from None
            except TargetNotEmpty as err:
                raise Conflict(str(err)) from None
            except TargetUnavailable as err:
                raise NotConnected(str(err)) from None
            except (DatabaseTooNew, UnmanagedDatabase) as err:
                raise Conflict(f"cannot copy to {shown}: {err}") from None
            except CopyError as err:
                log.error("copying the database to %s failed: %s", shown, err)
                raise Internal(str(err)) from None
            except StorageError as err:
                log.error("copying the database to %s failed: %s", shown, err)
                raise Internal(f"cannot copy to {shown}: {err}") from None
        return [
            CopiedTable(table.table, table.rows, table.checksum, table.seconds)
            for table in report.tables
        ]


def _replace_option(options: Mapping[str, Any]) -> bool:
    unknown = sorted(set(options) - set(COPY_OPTIONS))
    if unknown:
        raise InvalidArgument(
            f"unknown option {', '.join(unknown)}; CopyDatabase takes: {', '.join(COPY_OPTIONS)}"
        )
    replace = options.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidArgument("the replace option is a boolean")
    return replace
