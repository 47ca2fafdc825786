"""Errors raised by the storage layer.

The service layer translates these into its own errors; nothing above it sees them.
"""

from __future__ import annotations


class StorageError(Exception):
    """Root of the storage layer's errors."""


class InvalidQuery(StorageError, ValueError):
    """A search or paging request is malformed: unknown key or operator, bad path, bad value."""


class AlreadyExists(StorageError):
    """A row with the same unique key exists already."""


class RowNotFound(StorageError, LookupError):
    """The row asked for does not exist."""


class DatabaseTooNew(StorageError):
    """The database was written by a newer Roost than this one.

    Attributes:
        database_revision: the Alembic revision stamped in the database.
        code_revision: the newest revision this code knows.
    """

    def __init__(self, database_revision: str, code_revision: str) -> None:
        self.database_revision = database_revision
        self.code_revision = code_revision
        super().__init__(
            f"the database is at revision {database_revision}, newer than this Roost knows "
            f"(its newest is {code_revision}); run a newer Roost or restore a backup"
        )
