"""The parser contract: what an analyser's ``parser`` is given, and what it must return.

A parser turns an item's payload element into the item's parsed data. It is any callable
taking the payload, and the node's :class:`ParserContext` when it asks for it; plain or
``async def``:

.. code-block:: python

    def parse(payload: ET.Element) -> dict[str, Any]: ...
    def parse(payload: ET.Element, context: ParserContext) -> dict[str, Any]: ...
    async def parse(payload: ET.Element) -> dict[str, Any]: ...
    async def parse(payload: ET.Element, context: ParserContext) -> dict[str, Any]: ...

How it is called is decided once, from its signature, when the :class:`Analyser` holding
it is built (:meth:`ParserCall.of`): the context is passed exactly when the parser
*requires* a second positional argument (a second parameter with a default gets nothing,
so that ``parse(payload, base=None)`` keeps working), and it is awaited when it is a
coroutine function (an ``async def`` function or method, a callable object whose
``__call__`` is one, or a :func:`functools.partial` of either). A callable that cannot be
called either way (no positional parameter, a third required argument, a required
keyword-only one) is refused then.

Where it runs. A plain parser runs in a worker thread, never on the event loop (it must
not touch loop-bound objects; a pure function of its arguments is always right). An
``async def`` parser runs on the event loop, up to :data:`ASYNC_PARSE_CONCURRENCY` items of
a batch at a time, each given :data:`ASYNC_PARSE_TIMEOUT` seconds: it may await the
network, but CPU-heavy work belongs in a plain parser (or ``asyncio.to_thread``).

What it returns (:func:`output_json`): a ``dict`` that ``json.dumps`` accepts with
``allow_nan=False`` (no ``datetime``, set, bytes, NaN or infinity), at most
:data:`MAX_PARSED_BYTES` as compact UTF-8 JSON and nesting at most
:data:`MAX_PARSED_DEPTH` levels; or ``None`` for an item it has nothing to say about.
Anything else, an exception, or a timeout stores that item raw (no parsed data, the
payload's text indexed) and logs why, without the payload; the other items and the sync
go on.
"""

from __future__ import annotations

import functools
import inspect
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.service.errors import InvalidArgument
from roost.service.safe_xml import MAX_XML_DEPTH
from roost.storage.item_records import parsed_text

Parsed = dict[str, Any]
# Any of the four forms above: which one a parser has is checked when its Analyser is
# built (ParserCall.of), not by this type.
Parser = Callable[..., Any]

# Parsed data is a digest of an item, which the cache parses up to 1 MiB: a digest larger
# than the largest item parsed is a parser gone wrong, and every GetItems, Search and
# ItemsEvent carrying the item would carry it too.
MAX_PARSED_BYTES = 1024 * 1024
# As deep as a payload may nest. The search text walks parsed data by recursion, and
# SQLite's JSON functions refuse documents nested about a thousand levels deep, which
# would make every Search with a ``parsed`` filter over the node fail.
MAX_PARSED_DEPTH = MAX_XML_DEPTH
# Items of one batch an async parser works on at once.
ASYNC_PARSE_CONCURRENCY = 8
# Seconds an async parser may take on one item before the item is stored raw.
ASYNC_PARSE_TIMEOUT = 10.0

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class ParserContext:
    """The node a parser works for.

    Attributes:
        profile: the profile whose cache the item goes to.
        service: the pubsub service's JID (the owner's bare JID for PEP).
        node: the node name.
    """

    profile: str
    service: str
    node: str

    @property
    def where(self) -> str:
        """The node as logs name it (``service/node``)."""
        return f"{self.service}/{self.node}"


@dataclass(frozen=True, slots=True)
class ParserCall:
    """How a parser is called, decided once from its signature.

    Attributes:
        parser: the parser.
        takes_context: it is given the :class:`ParserContext` as its second argument.
        is_async: it is a coroutine function, awaited on the event loop.
    """

    parser: Parser
    takes_context: bool
    is_async: bool

    @staticmethod
    def of(parser: Parser) -> ParserCall:
        """How ``parser`` is called (the same object for the same parser, from a cache).

        Raises:
            InvalidArgument: ``parser`` is not callable, cannot be called with the payload
                alone, or requires more than two arguments.
        """
        try:
            hash(parser)
        except TypeError:
            return _call_of(parser)
        return _cached_call(parser)

    def __call__(self, payload: ET.Element, context: ParserContext) -> Any:
        """Call the parser (for an async one, this makes the coroutine)."""
        parser: Callable[..., Any] = self.parser
        return parser(payload, context) if self.takes_context else parser(payload)


@functools.lru_cache(maxsize=256)
def _cached_call(parser: Parser) -> ParserCall:
    return _call_of(parser)


def _call_of(parser: Parser) -> ParserCall:
    if not callable(parser):
        raise InvalidArgument(f"the parser must be callable, not {type(parser).__name__}")
    # A callable object is a coroutine function when its class's __call__ is one.
    is_async = inspect.iscoroutinefunction(parser) or inspect.iscoroutinefunction(
        type(parser).__call__
    )
    try:
        signature = inspect.signature(parser)
    except (TypeError, ValueError):
        # A builtin without a signature: called as parsers always were, with the payload.
        return ParserCall(parser, takes_context=False, is_async=is_async)
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    keywords = [
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    takes_any = positional or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    if keywords:
        problem = f"it requires keyword-only argument(s) {', '.join(keywords)}"
    elif len(required) > 2:
        problem = f"it requires {len(required)} arguments"
    elif not takes_any:
        problem = "it takes no positional argument"
    else:
        return ParserCall(parser, takes_context=len(required) == 2, is_async=is_async)
    raise InvalidArgument(
        f"the parser is called as parser(payload) or parser(payload, context), but {problem}"
    )


class RefusedOutput(ValueError):
    """A parser's output that may not be stored as parsed data; ``reason`` says why
    (types and sizes only, never values: they come from the payload)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def output_json(parsed: object) -> str:
    """A parser's output as the store keeps it (:func:`~roost.storage.parsed_text`),
    once checked: the check needs the text, so the text is what it gives.

    Raises:
        RefusedOutput: the output may not be stored as parsed data. ``None`` (no parsed
            data) is refused too: it has no text, and callers tell it apart first.
    """
    if not isinstance(parsed, dict):
        raise RefusedOutput(f"it returned a {type(parsed).__name__}, not a dict")
    try:
        text = parsed_text(parsed, strict=True)
    except (TypeError, ValueError) as exc:
        # The json module's messages name types only ("Object of type datetime is not
        # JSON serializable", "Out of range float values are not JSON compliant").
        raise RefusedOutput(f"its output is not JSON: {exc}") from None
    except RecursionError:
        raise RefusedOutput(f"its output nests more than {MAX_PARSED_DEPTH} levels deep") from None
    assert text is not None  # a dict
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > MAX_PARSED_BYTES:
        raise RefusedOutput(
            f"its output is {size} bytes as JSON, over the {MAX_PARSED_BYTES} bytes kept"
        )
    # Every level opens a bracket: few brackets, whatever their place, means shallow.
    if text.count("{") + text.count("[") > MAX_PARSED_DEPTH and _nests_deeper(parsed):
        raise RefusedOutput(f"its output nests more than {MAX_PARSED_DEPTH} levels deep")
    return text


def _nests_deeper(parsed: Parsed) -> bool:
    """Whether ``parsed`` nests dicts and lists more than MAX_PARSED_DEPTH deep."""
    stack: list[tuple[Any, int]] = [(parsed, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PARSED_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list | tuple)
        )
    return False
