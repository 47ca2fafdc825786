"""SQLite connections: the file's creation, each connection's settings, statements run
across another connection's schema change, and SQLite's own memory count.

What every engine on an SQLite file sets up (the daemon's async engine, the one-call
writer's), apart from the SQL forms of :mod:`roost.storage.engines.sqlite`.
"""

from __future__ import annotations

import _sqlite3
import ctypes
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext

#: How long a connection waits for another's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: The engine's connections to a file (writes, searches; the reads have their own): each
#: opened when first needed and then kept. SQLAlchemy's default, 5 kept and 10 more
#: closed as soon as they are given back, made a busy daemon open and close about ten
#: connections a second (a thread and the pragmas each time) under the soak.
POOL_SIZE = 15
POOL_OVERFLOW = 0

log = logging.getLogger(__name__)


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) before SQLite opens it.

    The database holds account passwords: only its owner may read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    path.chmod(0o600)


def sqlite_url_file(url: URL) -> Path | None:
    """The file of an SQLite URL, or None for an in-memory database."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; the busy timeout turns writer
    # contention into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _run_across_schema_change(run: Callable[[], object], context: ExecutionContext) -> bool:
    """Run a statement, and once more if it failed with "no such table".

    SQLite 3.40 fails the first DELETE that reaches the items (of items, nodes or
    profiles, whose deletes cascade to them) on a connection whose copy of the schema
    is older than the file's (another connection created an index since, as
    ``ItemStore.ensure_parsed_key_index`` does at run time), when the full-text table
    has not been opened on it since: compiling the full-text trigger reads the
    full-text table's settings with a statement of its own, which finds the schema
    changed and reloads it under the DELETE being compiled, and the DELETE then
    reports "no such table". The statement has changed nothing (it was not compiled;
    and SQLite undoes a statement that fails while it runs whole), and the reload is
    done: the same statement then runs. A table that is really missing fails the second
    time too.
    """
    try:
        run()
    except context.dialect.loaded_dbapi.OperationalError as error:
        if not str(error).startswith("no such table"):
            raise
        log.debug("statement compiled again after a schema change: %s", error)
        run()
    # Tells SQLAlchemy the statement has run.
    return True


def _execute(
    cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext
) -> bool:
    return _run_across_schema_change(lambda: cursor.execute(statement, parameters), context)


def _execute_no_params(cursor: DBAPICursor, statement: str, context: ExecutionContext) -> bool:
    return _run_across_schema_change(lambda: cursor.execute(statement), context)


def set_up_sqlite_engine(sync_engine: Engine) -> None:
    """What every engine on an SQLite file does: its settings on each connection, and
    statements run across another connection's schema change."""
    event.listen(sync_engine, "connect", _configure_connection)
    event.listen(sync_engine, "do_execute", _execute)
    event.listen(sync_engine, "do_execute_no_params", _execute_no_params)


@functools.cache
def sqlite_memory_used() -> Callable[[], int] | None:
    """SQLite's ``sqlite3_memory_used`` (bytes the library holds), None where it cannot
    be found."""
    # The library Python's sqlite3 module runs on: a symbol looked up through the
    # module's own handle is found in the libraries the module was linked with.
    try:
        function = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    function.argtypes = []
    function.restype = ctypes.c_int64
    return function
