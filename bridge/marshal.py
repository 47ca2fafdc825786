"""Variants to and from a JSON-able form, for the key/value store.

A stored value is a pair (type tag, JSON-able value): the tag is the variant's D-Bus
signature, and the value its JSON form, chosen so that the signature alone says how to
turn it back:

============  ==========================================
D-Bus         JSON form
============  ==========================================
integers      number
``d``         number (NaN and infinities are refused)
``b``         true / false
``s o g``     string
``ay``        string, base64
``a{kv}``     array of ``[key, value]`` pairs (D-Bus keys need not be strings)
``a…``        array
``(…)``       array, one element per field
``v``         ``[signature, value]``
============  ==========================================
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from dbus_fast import Variant
from dbus_fast.signature import SignatureType, get_signature_tree

_INTEGERS = frozenset("ynqiuxt")
_STRINGS = frozenset("sog")


class MarshalError(ValueError):
    """A stored value does not match its type tag (a damaged or foreign row)."""


def variant_to_json(variant: Variant) -> tuple[str, Any]:
    """``(signature, JSON-able value)`` for ``variant``."""
    return variant.signature, _to_json(variant.type, variant.value)


def json_to_variant(signature: str, value: Any) -> Variant:
    """Rebuild the variant stored as ``(signature, value)``.

    Raises:
        MarshalError: ``value`` does not have the form ``signature`` calls for.
    """
    try:
        kind = get_signature_tree(signature).types[0]
        # The value is built from the type itself: dbus-fast's verification would only
        # walk it again.
        return Variant(kind, _from_json(kind, value), verify=False)
    except MarshalError:
        raise
    except Exception as err:
        raise MarshalError(f"stored value does not match its type {signature!r}: {err}") from err


def _to_json(kind: SignatureType, value: Any) -> Any:
    token = kind.token
    if token in _INTEGERS or token in _STRINGS or token in "bd":
        return value
    if token == "v":
        return [value.signature, _to_json(value.type, value.value)]
    if token == "(":
        return [_to_json(child, item) for child, item in zip(kind.children, value, strict=True)]
    if token == "a":
        child = kind.children[0]
        if child.token == "y":
            return base64.b64encode(bytes(value)).decode("ascii")
        if child.token == "{":
            key_type, value_type = child.children
            return [[_to_json(key_type, k), _to_json(value_type, v)] for k, v in value.items()]
        return [_to_json(child, item) for item in value]
    raise MarshalError(f"cannot store a value of type {kind.signature!r}")


def _from_json(kind: SignatureType, value: Any) -> Any:
    token = kind.token
    if token in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MarshalError(f"expected an integer for {token!r}, got {value!r}")
        return value
    if token == "b":
        if not isinstance(value, bool):
            raise MarshalError(f"expected a boolean, got {value!r}")
        return value
    if token == "d":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MarshalError(f"expected a number, got {value!r}")
        return float(value)
    if token in _STRINGS:
        if not isinstance(value, str):
            raise MarshalError(f"expected a string, got {value!r}")
        return value
    if token == "v":
        signature, inner = value
        return json_to_variant(signature, inner)
    if token == "(":
        if not isinstance(value, list) or len(value) != len(kind.children):
            raise MarshalError(f"expected {len(kind.children)} struct fields, got {value!r}")
        return [_from_json(child, item) for child, item in zip(kind.children, value, strict=True)]
    if token == "a":
        child = kind.children[0]
        if child.token == "y":
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError) as err:
                raise MarshalError(f"expected base64 bytes: {err}") from None
        if not isinstance(value, list):
            raise MarshalError(f"expected an array, got {value!r}")
        if child.token == "{":
            key_type, value_type = child.children
            return {_from_json(key_type, k): _from_json(value_type, v) for k, v in value}
        return [_from_json(child, item) for item in value]
    raise MarshalError(f"cannot read a value of type {kind.signature!r}")
