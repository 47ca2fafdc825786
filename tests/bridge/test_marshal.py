"""Variants survive the trip to the key/value store's JSON form, types included."""

from __future__ import annotations

import json

import pytest
from dbus_fast import Variant
from hypothesis import given, settings

from roost.bridge.marshal import MarshalError, json_to_variant, variant_to_json
from tests.bridge.strategies import variants


@settings(max_examples=300, deadline=None)
@given(variants)
def test_every_variant_round_trips_through_json(variant: Variant) -> None:
    signature, encoded = variant_to_json(variant)
    assert signature == variant.signature
    # What the store keeps is JSON text: go through it for real.
    back = json_to_variant(signature, json.loads(json.dumps(encoded)))
    assert back == variant
    assert back.signature == variant.signature


@pytest.mark.parametrize(
    ("variant", "encoded"),
    [
        (Variant("ay", b"\x00\xff"), "AP8="),
        (Variant("a{is}", {3: "x"}), [[3, "x"]]),
        (Variant("v", Variant("t", 2**64 - 1)), ["t", 2**64 - 1]),
        (Variant("(sb)", ["a", True]), ["a", True]),
    ],
)
def test_documented_json_forms(variant: Variant, encoded: object) -> None:
    assert variant_to_json(variant) == (variant.signature, encoded)


@pytest.mark.parametrize(
    ("signature", "value"),
    [("i", "1"), ("b", 1), ("s", 5), ("(ii)", [1]), ("ay", "***"), ("as", "x"), ("d", True)],
)
def test_a_value_that_does_not_match_its_type_is_refused(signature: str, value: object) -> None:
    with pytest.raises(MarshalError):
        json_to_variant(signature, value)


def test_unix_fds_cannot_be_stored() -> None:
    with pytest.raises(MarshalError):
        variant_to_json(Variant("h", 0))
