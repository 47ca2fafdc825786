"""A table's rows as one checksum that reads the same on SQLite and on PostgreSQL.

:func:`~roost.storage.copy.copy_database` checks a copy by computing, for each table,
the SHA-256 of its rows in primary-key order on both sides. The two databases hand the
same data back in different shapes (an SQLite REAL that holds a whole number, JSON text
against JSONB, which orders an object's keys its own way and keeps ``1.0`` as ``1.0``
but ``1e300`` as a 301-digit integer), so each value is put in one canonical form first,
by its column's type:

- NULL is ``n``; booleans ``T`` and ``F``; integers their decimal digits; floats their
  ``repr`` (the shortest text that reads back as the same double);
- text is its length and its characters (so that no separator inside it can make two
  different rows read alike);
- JSON is its canonical text: keys sorted, no spaces, non-ASCII characters as they are,
  and every number by its value as a double (JSON has one kind of number: ``1``, ``1.0``
  and ``1e0`` are the same value, and JSONB may give any of them back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Float, Integer

#: Integers up to this size are exact as doubles; larger ones are compared as doubles too
#: (JSONB would give a float that large back as an integer).
_EXACT_INTEGER = 2**53

Encoder = Callable[[Any], str]


def json_number(value: float) -> float:
    """A JSON number in the one form the checksum writes for its value: an integral value
    that a double holds exactly as an integer, any other as a double (an integer beyond
    every double as itself: only its digits tell it apart)."""
    if isinstance(value, int):
        if abs(value) < _EXACT_INTEGER:
            return value
        try:
            return float(value)
        except OverflowError:
            return value
    if value.is_integer() and abs(value) < _EXACT_INTEGER:
        return int(value)
    return value


def _numbers_by_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        return json_number(value)
    if isinstance(value, dict):
        return {str(key): _numbers_by_value(member) for key, member in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_by_value(element) for element in value]
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> str:
    """``value`` (decoded JSON) as one canonical text (see the module documentation)."""
    # One call of the C encoder for the whole value: encoding each string by itself
    # took most of a copy's time.
    return json.dumps(
        _numbers_by_value(value), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


def _text(value: Any) -> str:
    text = str(value)
    return f"{len(text)}:{text}"


def _integer(value: Any) -> str:
    return str(int(value))


def _float(value: Any) -> str:
    return repr(float(value))


def _boolean(value: Any) -> str:
    return "T" if value else "F"


def _json(value: Any) -> str:
    text = canonical_json(value)
    return f"{len(text)}:{text}"


def encoder_for(column: Column[Any]) -> Encoder:
    """How a non-NULL value of ``column`` is written into the checksum."""
    kind = column.type
    if isinstance(kind, JSON):
        return _json
    if isinstance(kind, Boolean):
        return _boolean
    if isinstance(kind, Float):
        return _float
    if isinstance(kind, Integer):
        return _integer
    return _text


class TableChecksum:
    """The running checksum and row count of one table's rows, fed in primary-key order.

    Attributes:
        rows: how many rows were added.
    """

    def __init__(self, columns: Sequence[Column[Any]]) -> None:
        self._encoders = [encoder_for(column) for column in columns]
        self._hash = hashlib.sha256()
        self.rows = 0

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add rows, each with its values in the order of the columns given."""
        encoders = self._encoders
        lines = [
            "\x1f".join(
                "n" if value is None else encode(value)
                for encode, value in zip(encoders, row, strict=True)
            )
            + "\x1e"
            for row in rows
        ]
        # One update per batch (hashing many small strings one by one costs more than
        # joining them); each row ends with its own mark, so that how the rows are cut
        # into batches never changes the sum.
        self._hash.update("".join(lines).encode("utf-8", "surrogatepass"))
        self.rows += len(lines)

    def hexdigest(self) -> str:
        """The checksum of every row added so far (SHA-256, hexadecimal)."""
        return self._hash.hexdigest()
