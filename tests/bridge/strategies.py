"""Hypothesis strategies for D-Bus values: a signature, then a value of that type."""

from __future__ import annotations

from typing import Any

from dbus_fast import Variant
from dbus_fast.signature import SignatureType
from hypothesis import strategies as st

_INT_RANGES = {
    "y": (0, 2**8 - 1),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}
BASIC = "ynqiuxtbdsog"

# D-Bus strings are UTF-8 without NUL.
dbus_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)

signatures: st.SearchStrategy[str] = st.recursive(
    st.sampled_from(BASIC),
    lambda inner: st.one_of(
        inner.map(lambda sig: f"a{sig}"),
        st.tuples(st.sampled_from("sxyb"), inner).map(lambda kv: f"a{{{kv[0]}{kv[1]}}}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda sigs: "(" + "".join(sigs) + ")"),
        st.just("v"),
        st.just("ay"),
    ),
    max_leaves=6,
)
"""Single complete D-Bus types, nested a few levels."""


def _basic(token: str) -> st.SearchStrategy[Any]:
    if token in _INT_RANGES:
        low, high = _INT_RANGES[token]
        return st.integers(low, high)
    if token == "b":
        return st.booleans()
    if token == "d":
        return st.floats(allow_nan=False, allow_infinity=False)
    if token == "o":
        return st.sampled_from(["/", "/org/roost/Backend1", "/a/b_c/D9"])
    if token == "g":
        return st.sampled_from(["", "s", "a{sv}", "(ii)"])
    return dbus_text


def values_of(kind: SignatureType, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the type ``kind``; a variant holds a basic or array type."""
    token = kind.token
    if token in BASIC:
        return _basic(token)
    if token == "v":
        inner = st.sampled_from(["s", "i", "d", "as", "a{sv}" if depth < 2 else "ay"])
        return inner.flatmap(lambda sig: variant_of(sig, depth + 1))
    if token == "(":
        return st.tuples(*(values_of(child, depth) for child in kind.children)).map(list)
    child = kind.children[0]
    if child.token == "y":
        return st.binary(max_size=16)
    if child.token == "{":
        key, value = child.children
        return st.dictionaries(values_of(key, depth), values_of(value, depth), max_size=3)
    return st.lists(values_of(child, depth), max_size=3)


def variant_of(signature: str, depth: int = 0) -> st.SearchStrategy[Variant]:
    """Variants of ``signature``."""
    kind = Variant(signature, None, verify=False).type
    return values_of(kind, depth).map(lambda value: Variant(signature, value))


variants: st.SearchStrategy[Variant] = signatures.flatmap(variant_of)
"""Any variant of a few nesting levels."""
