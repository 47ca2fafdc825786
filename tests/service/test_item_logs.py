"""What the log says about items it could not parse, or store parsed: ids and sizes, never
their payload."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from roost.service.cache.parsers import ParserContext
from roost.service.cache.stored_form import stored_forms
from roost.service.pubsub.model import PubsubItem

SECRET = "private words"
PUBSUB = "http://jabber.org/protocol/pubsub"


def item(payload: str, item_id: str = "it") -> PubsubItem:
    return PubsubItem(
        id=item_id, publisher="", xml=f'<item xmlns="{PUBSUB}" id="{item_id}">{payload}</item>'
    )


def failing_parser(element: ET.Element) -> dict[str, Any]:
    # As a plugin's parser may: the payload quoted in the message.
    raise ValueError(f"cannot read {''.join(element.itertext())!r}")


@pytest.mark.parametrize(
    ("case", "parser", "words"),
    [
        ("parser", failing_parser, ["svc/node:", "'it'", "parser failed", "ValueError"]),
        ("broken", None, ["'it'", "stored raw", "not well-formed"]),
        ("deep", None, ["'it'", "stored raw", "256 levels"]),
    ],
)
async def test_logged_by_id_and_size(
    caplog: pytest.LogCaptureFixture, case: str, parser: Any, words: list[str]
) -> None:
    payload = {
        "parser": f"<x xmlns='urn:x'>{SECRET}</x>",
        "broken": f"<x xmlns='urn:x'>{SECRET}</y>",
        "deep": "<x xmlns='urn:x'>" * 300 + SECRET + "</x>" * 300,
    }[case]
    [stored] = await stored_forms([item(payload)], parser, ParserContext("p", "svc", "node"))
    assert stored.parsed is None
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = record.getMessage()
    assert all(word in message for word in words), message
    assert SECRET not in message and "bytes" in message
    assert record.exc_info is None
