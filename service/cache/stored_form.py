"""Turning pubsub items into the form the cache stores: raw XML, parsed data, search text.

:func:`stored_forms` takes a batch of one node's items and their analyser's parser (the
contract a parser follows is in :mod:`roost.service.cache.parsers`) and returns what the
item store writes, in the same order.

One item never stops anything. A parser that raises, times out, or returns something that
is not a JSON-able dict within the limits of parsed data stores that item raw: its XML,
no parsed data, its payload's text indexed; the log says which item and why.

Limits: an item whose XML is over :data:`MAX_STORED_ITEM_BYTES`, or whose payload nests
elements more than :data:`~roost.service.safe_xml.MAX_XML_DEPTH` deep, is stored raw too:
its XML exactly as received (so the cache still answers what the server would), but no
parser runs on it and it has no search text. Parsers and the search text extraction may
walk a payload by recursion and spend time in proportion to its size; such an item is
almost certainly not what a parser expects anyway. One such item never stops a sync or
an event, and the node stays served.

Off the event loop: everything a batch costs in CPU (reading an item's XML when it was not
read from the stream already, the depth check, a plain parser, checking its output, the
search text) runs in the loop's default executor, so a slow parser or a large item never
holds the daemon's loop: while a worker parses, the loop waits at most the interpreter's
switch interval (5 ms) for the GIL. A trip to the worker lasts at most
:data:`WORKER_SLICE` (and the item it is on): a cancelled batch stops within it, and other
users of the executor wait no longer. Only an ``async def`` parser runs on the loop, a few
items at a time.

Logs name the node, the item's id and sizes; never the payload, which may be private.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from roost.service.cache.parsers import (
    ASYNC_PARSE_CONCURRENCY,
    ASYNC_PARSE_TIMEOUT,
    Parser,
    ParserCall,
    ParserContext,
    RefusedOutput,
    output_json,
)
from roost.service.cache.search_text import search_text_for
from roost.service.errors import InvalidArgument
from roost.service.loop_priority import LOOP_PRIORITY
from roost.service.pubsub.model import PubsubItem
from roost.service.safe_xml import MAX_XML_DEPTH, nests_deeper, parse_xml
from roost.storage.item_records import ItemInput

log = logging.getLogger(__name__)

# Past this size an item is stored without parsing. Servers bound stanza sizes (Prosody
# and ejabberd default to 64-256 KiB for clients); an honest item is far smaller.
MAX_STORED_ITEM_BYTES = 1024 * 1024
# How deep an <item> element nests: its payload's limit, plus the <item> itself.
_ITEM_DEPTH = MAX_XML_DEPTH + 1
# Item ids are logged; a hostile one may be long.
_LOGGED_ID_CHARS = 100

# Longest a trip to a worker thread runs before it hands back to the loop (seconds).
WORKER_SLICE = 0.05

_T = TypeVar("_T")
_V = TypeVar("_V")
# An item within the limits: its payload (None when it has none) and its size in bytes.
# None instead: the item is stored raw, unparsed and unindexed.
_Checked = tuple[ET.Element | None, int] | None
# What the parser made of an item: its output, or why there is none.
_Outcome = tuple[Any, str | None]


async def stored_forms(
    items: Sequence[PubsubItem], parser: Parser | None, context: ParserContext
) -> list[ItemInput]:
    """The :class:`ItemInput` of each of ``items``, in order.

    Args:
        items: items of one node as GetItems returns them (``xml`` is the ``<item>``
            element; ``element``, when set, the same already parsed).
        parser: the node's analyser's parser, if it has one.
        context: the node; given to a parser that asks for it, and named in logs.

    Raises:
        InvalidArgument: ``parser`` does not follow the parser contract (an
            :class:`~roost.service.cache.analysers.Analyser` refuses such a parser when
            it is built, so the analysers' parsers never do).
    """
    if not items:
        return []
    call = None if parser is None else ParserCall.of(parser)
    where = context.where
    if call is None or not call.is_async:
        return await _off_loop(partial(_stored_form, call=call, context=context), items)
    checked = await _off_loop(partial(_checked, where=where), items)
    outcomes = await _parse_async(checked, call, context)
    return await _off_loop(
        lambda job: _finished(*job, where=where), list(zip(items, checked, outcomes, strict=True))
    )


# -- in a worker thread -------------------------------------------------------------------


async def _off_loop(work: Callable[[_V], _T], values: Sequence[_V]) -> list[_T]:
    """``[work(value) for value in values]``, computed in the loop's default executor.

    Each trip to a worker thread ends after :data:`WORKER_SLICE` seconds (and the item it
    is on), so that no batch holds a worker for long: other users of the executor wait
    at most a slice, and a cancelled batch stops within one.
    """
    results: list[_T] = []
    while len(results) < len(values):
        results += await asyncio.to_thread(_slice, work, values, len(results))
    return results


def _slice(work: Callable[[_V], _T], values: Sequence[_V], start: int) -> list[_T]:
    deadline = time.monotonic() + WORKER_SLICE
    done: list[_T] = []
    for index in range(start, len(values)):
        LOOP_PRIORITY.step_aside()
        done.append(work(values[index]))
        if time.monotonic() >= deadline:
            break
    return done


def _stored_form(item: PubsubItem, *, call: ParserCall | None, context: ParserContext) -> ItemInput:
    """An item's stored form, with a plain parser (or none)."""
    checked = _checked(item, where=context.where)
    outcome = None
    if call is not None and checked is not None and checked[0] is not None:
        outcome = _parse_plain(call, checked[0], context)
    return _finished(item, checked, outcome, where=context.where)


def _checked(item: PubsubItem, *, where: str) -> _Checked:
    """The item's payload and size, or None (logged) when it is past the limits."""
    size = _size(item.xml)
    if size > MAX_STORED_ITEM_BYTES:
        log.warning(
            "%s: item %s is %d bytes, over the %d bytes parsed and indexed; stored raw",
            where,
            _shown_id(item.id),
            size,
            MAX_STORED_ITEM_BYTES,
        )
        return None
    try:
        # Already parsed from the stream (no entities there either): not parsed twice.
        element = item.element if item.element is not None else _item_element(item.xml)
        if nests_deeper(item.xml, element, _ITEM_DEPTH):
            raise InvalidArgument(
                f"its payload nests elements more than {MAX_XML_DEPTH} levels deep; "
                f"the limit is {MAX_XML_DEPTH} levels"
            )
    except InvalidArgument as exc:
        # The message names the limit broken or where the XML is not well-formed.
        log.warning(
            "%s: item %s (%d bytes) stored raw, not parsed or indexed: %s",
            where,
            _shown_id(item.id),
            size,
            exc.message,
        )
        return None
    return next(iter(element), None), size


def _parse_plain(call: ParserCall, payload: ET.Element, context: ParserContext) -> _Outcome:
    try:
        parsed = call(payload, context)
    except Exception as exc:  # a plugin's parser may raise anything
        # Its type only: a parser's message may quote the payload.
        return None, f"it raised {type(exc).__name__}"
    if inspect.isawaitable(parsed):
        # A plain function that returned a coroutine: never awaited here.
        if inspect.iscoroutine(parsed):
            parsed.close()
        return None, "it returned an awaitable: an async parser is declared with async def"
    return parsed, None


def _finished(
    item: PubsubItem, checked: _Checked, outcome: _Outcome | None, *, where: str
) -> ItemInput:
    """The stored form, once the parser (if any) has run; a bad outcome is logged."""
    if checked is None:
        return ItemInput(item.id, item.publisher, item.xml, None, "")
    payload, size = checked
    parsed, problem = outcome if outcome is not None else (None, None)
    text = None
    if problem is None and parsed is not None:
        try:
            text = output_json(parsed)
        except RefusedOutput as refused:
            problem = refused.reason
    if problem is not None:
        log.warning(
            "%s: the parser failed on item %s (%d bytes): %s; stored without parsed data",
            where,
            _shown_id(item.id),
            size,
            problem,
        )
        parsed = None
    return ItemInput(
        item.id,
        item.publisher,
        item.xml,
        parsed,
        search_text_for(parsed, payload),
        parsed_json=text,
    )


# -- on the event loop ---------------------------------------------------------------------


async def _parse_async(
    checked: list[_Checked], call: ParserCall, context: ParserContext
) -> list[_Outcome | None]:
    """The async parser's outcome for each item it runs on, a few items at a time."""
    outcomes: list[_Outcome | None] = [None] * len(checked)
    pending = iter([n for n, c in enumerate(checked) if c is not None and c[0] is not None])

    async def parse_some() -> None:
        # The workers share one iterator: each takes the next item when it is free.
        for index in pending:
            item_checked = checked[index]
            assert item_checked is not None and item_checked[0] is not None
            outcomes[index] = await _parse_one(call, item_checked[0], context)

    async with asyncio.TaskGroup() as group:
        for _worker in range(ASYNC_PARSE_CONCURRENCY):
            group.create_task(parse_some())
    return outcomes


async def _parse_one(call: ParserCall, payload: ET.Element, context: ParserContext) -> _Outcome:
    deadline = asyncio.timeout(ASYNC_PARSE_TIMEOUT)
    try:
        async with deadline:
            return await call(payload, context), None
    except TimeoutError:
        if deadline.expired():
            return None, f"no answer in {ASYNC_PARSE_TIMEOUT:g} s"
        return None, "it raised TimeoutError"
    except Exception as exc:  # a plugin's parser may raise anything
        return None, f"it raised {type(exc).__name__}"


# -- helpers ------------------------------------------------------------------------------


def payload_of(item_xml: str) -> ET.Element | None:
    """The payload element of an ``<item>`` (its first child), None when it has none.

    Raises:
        InvalidArgument: the item is too large or not well-formed.
    """
    return next(iter(_item_element(item_xml)), None)


def _item_element(item_xml: str) -> ET.Element:
    # No depth limit here: _checked checks it, with a message about the payload.
    return parse_xml(item_xml, what="item", max_bytes=MAX_STORED_ITEM_BYTES, max_depth=None)


def payload_namespaces(items: list[PubsubItem]) -> frozenset[str]:
    """The namespaces of the payloads of ``items`` (for analysis)."""
    found: set[str] = set()
    for item in items:
        try:
            payload = payload_of(item.xml)
        except InvalidArgument:
            continue
        if payload is not None and payload.tag.startswith("{"):
            found.add(payload.tag[1:].split("}", 1)[0])
    return frozenset(found)


def _size(text: str) -> int:
    """``text``'s size in UTF-8 bytes (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _shown_id(item_id: str) -> str:
    """An item id as logs show it: quoted, and cut when it is long."""
    if len(item_id) > _LOGGED_ID_CHARS:
        return repr(item_id[:_LOGGED_ID_CHARS]) + f"… ({len(item_id)} characters)"
    return repr(item_id)
