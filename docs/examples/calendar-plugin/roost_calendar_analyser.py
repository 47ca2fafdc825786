"""A Roost analyser plugin: calendar event nodes, synchronised and parsed.

An item of such a node carries one event::

    <event xmlns="urn:example:calendar:0">
      <summary>Tea with Juliet</summary>
      <start>2026-03-01T16:00:00Z</start>
      <location>Verona</location>
    </event>
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from roost.service.cache.analysers import Analyser, AnalyserRegistry

NS = "urn:example:calendar:0"


def parse_event(payload: ET.Element) -> dict[str, Any] | None:
    """An ``<event/>`` as the item's parsed data; None for anything else (stored raw).

    It runs in a worker thread, so it must be a pure function of its argument. Change
    ``parser_version`` below whenever what it returns changes: Roost then parses the
    stored items again.
    """
    if payload.tag != f"{{{NS}}}event":
        return None

    def text(name: str) -> str | None:
        child = payload.find(f"{{{NS}}}{name}")
        return None if child is None or child.text is None else child.text.strip()

    start = text("start")
    try:
        start_ts = datetime.fromisoformat(start).timestamp() if start else None
    except ValueError:
        start_ts = None
    return {
        "summary": text("summary"),
        "start": start,
        "start_ts": start_ts,
        "location": text("location"),
    }


def setup(registry: AnalyserRegistry) -> None:
    """Called by Roost at start with its analysers' registry."""
    registry.register_analyser(
        Analyser(
            name="calendar",
            namespace=NS,  # the payload's namespace, or the node's pubsub#type
            type="calendar",
            subtype="event",
            to_sync=True,
            parser=parse_event,
            parser_version="1",
            indexed_keys=("start_ts",),
        )
    )
