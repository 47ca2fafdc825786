"""Pubsub stanzas on the wire: building requests, reading answers, mapping errors.

Requests are built as plain elements rather than through slixmpp's stanza plugins: RSM
``<set/>`` is not registered under ``<pubsub/>`` there, and item XML is handed on as text
anyway, so one path serves every request.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any
from xml.sax.saxutils import escape

from slixmpp.exceptions import IqError, IqTimeout

from roost.service.errors import InvalidArgument, NotConnected, XmppError
from roost.service.loop_priority import LOOP_PRIORITY
from roost.service.pubsub.model import PubsubItem
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.item_stream import DISCO_ITEMS_PATH, PUBSUB_ITEMS_PATH

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
XML_NS = "http://www.w3.org/XML/1998/namespace"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NODE_CONFIG_FORM = "http://jabber.org/protocol/pubsub#node_config"
SUBSCRIBE_OPTIONS_FORM = "http://jabber.org/protocol/pubsub#subscribe_options"
# Items serialised per trip to a worker thread by parse_items_off_loop (a trip of 500
# small items takes about 10 ms).
ITEMS_PER_TRIP = 500
# How long a streamed answer may take as a whole, at most: its reader bounds it by how
# long the server stays quiet (request_timeout), while storing may slow it down a lot.
STREAMED_ANSWER_BOUND = 24 * 3600.0

MULTI_FIELDS = frozenset({"list-multi", "jid-multi", "text-multi"})


def element(tag: str, namespace: str, **attrs: str) -> ET.Element:
    """A new element ``{namespace}tag`` with the given attributes."""
    return ET.Element(f"{{{namespace}}}{tag}", {k: v for k, v in attrs.items() if v})


async def send_iq(
    client: RoostClient, kind: str, to: str, payload: ET.Element, wait: float | None = None
) -> ET.Element:
    """Send an iq of ``kind`` (get/set) with ``payload`` to ``to``; returns the result iq.

    ``wait`` (default: the client's ``request_timeout``) bounds the wait for the answer.

    Raises:
        XmppError: the server answered an error, or did not answer in time
            (``remote-server-timeout``).
        NotConnected: the session was down, or its connection was lost before the answer
            (said at once: that answer can no longer come).
    """
    if not client.is_connected():
        raise NotConnected("the profile's XMPP session is down")
    wait = client.request_timeout if wait is None else wait
    iq = client.make_iq_get(ito=to) if kind == "get" else client.make_iq_set(ito=to)
    iq.append(payload)
    return await _answer(client, iq, to, wait)


async def _answer(client: RoostClient, iq: Any, to: str, wait: float) -> ET.Element:
    """Send ``iq`` and wait for its result, as :func:`send_iq` says."""
    ended = client.connection_ended()
    answer: asyncio.Future[Any] = iq.send(timeout=wait)
    try:
        await asyncio.wait({answer, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not answer.done():
            # Given up (the connection ended, or the caller was cancelled): the
            # timeout slixmpp armed finds the future done and raises nothing.
            answer.cancel()
    if answer.cancelled():
        raise NotConnected(f"the connection to the server was lost before {to or 'it'} answered")
    try:
        result = answer.result()
    except IqError as exc:
        error = exc.iq["error"]
        raise XmppError(
            error["condition"], error["text"] or "", error["type"] or "cancel"
        ) from None
    except IqTimeout:
        raise XmppError(
            "remote-server-timeout",
            f"{to or 'the server'} did not answer within {wait:g} s",
            "wait",
        ) from None
    reply: ET.Element = result.xml
    return reply


async def stream_items(
    client: RoostClient,
    to: str,
    payload: ET.Element,
    batch: int,
    answered: Callable[[ET.Element], None] | None = None,
) -> AsyncGenerator[list[PubsubItem]]:
    """The items of an items query's answer, in the server's order, in batches of
    ``batch`` as the answer arrives (:mod:`roost.service.xmpp.item_stream`): what is held
    of the answer stays bounded however many items it has. ``answered``, when given, gets
    the answer itself (its items taken out, its RSM ``<set/>`` left) once its last batch
    has been given.

    Raises:
        XmppError: as :func:`send_iq`; ``remote-server-timeout`` also when nothing of the
            answer came for the client's ``request_timeout``.
        NotConnected: as :func:`send_iq`.
    """
    streamed = _streamed(client, to, payload, PUBSUB_ITEMS_PATH, batch, answered)
    async with aclosing(streamed) as answer:
        async for elements in answer:
            yield await asyncio.to_thread(_pubsub_items, elements)


async def stream_listing(
    client: RoostClient, to: str, node: str, batch: int
) -> AsyncGenerator[list[str]]:
    """The item ids of ``node``'s disco#items listing, in the server's order, in batches
    as the answer arrives, as :func:`stream_items` does for items: a listing has an entry
    for each item of the node."""
    query = element("query", NS_DISCO_ITEMS, node=node)
    async with aclosing(_streamed(client, to, query, DISCO_ITEMS_PATH, batch)) as answer:
        async for elements in answer:
            yield [name for entry in elements if (name := entry.get("name"))]


async def _streamed(
    client: RoostClient,
    to: str,
    payload: ET.Element,
    path: tuple[str, ...],
    batch: int,
    answered: Callable[[ET.Element], None] | None = None,
) -> AsyncGenerator[list[ET.Element]]:
    """The elements at ``path`` of the answer to an iq get of ``payload``, in batches of
    ``batch`` as they are parsed; ``answered`` and the errors of :func:`stream_items`."""
    if not client.is_connected():
        raise NotConnected("the profile's XMPP session is down")
    iq = client.make_iq_get(ito=to)
    iq.append(payload)
    iq_id = iq["id"]
    stream = client.expect_items(iq_id, path)
    # The answer as a whole is bounded by the stream going quiet, not by its length.
    answer = asyncio.ensure_future(_answer(client, iq, to, STREAMED_ANSWER_BOUND))
    answer.add_done_callback(lambda _done: stream.end())
    try:
        while True:
            if not await stream.wait(batch, client.request_timeout):
                raise XmppError(
                    "remote-server-timeout",
                    f"{to or 'the server'} sent nothing of its answer for "
                    f"{client.request_timeout:g} s",
                    "wait",
                )
            elements = stream.batch(batch)
            if elements:
                yield elements
            elif answer.done():
                break
        reply = await answer
        if answered is not None:
            answered(reply)
    finally:
        client.forget_items(iq_id, stream)
        if not answer.done():
            answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)


def pubsub(namespace: str = NS_PUBSUB) -> ET.Element:
    """An empty ``<pubsub/>`` (or owner) element."""
    return element("pubsub", namespace)


_ATTR_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _open(node: ET.Element, parent_ns: str | None, out: list[str]) -> tuple[str, str]:
    """Write ``node``'s start tag up to its closing ``>``; returns its (namespace, name)."""
    tag = node.tag
    ns, _, name = tag[1:].partition("}") if tag[0] == "{" else ("", "", tag)
    out.append("<" + name)
    if ns != parent_ns:
        out.append(' xmlns="' + escape(ns, _ATTR_ESCAPES) + '"')
    prefixes = 0
    for key, value in node.attrib.items():
        if key[0] == "{":
            key_ns, _, key_name = key[1:].partition("}")
            if key_ns == XML_NS:
                key = "xml:" + key_name
            else:
                key = f"a{prefixes}:{key_name}"
                out.append(f' xmlns:a{prefixes}="' + escape(key_ns, _ATTR_ESCAPES) + '"')
                prefixes += 1
        out.append(" " + key + '="' + escape(value, _ATTR_ESCAPES) + '"')
    return ns, name


def _serialise(root: ET.Element, out: list[str]) -> None:
    # A loop over an explicit stack rather than a recursion: an item nested thousands of
    # elements deep (servers accept them) must serialise like any other, not hit the
    # interpreter's recursion limit. Each open element on the stack: its children still
    # to write, its end tag, its namespace and its tail. Elements without children, most
    # of them, are written whole without touching the stack.
    ns, name = _open(root, None, out)
    if len(root) == 0:
        out.append(">" + escape(root.text) + "</" + name + ">" if root.text else "/>")
        return
    out.append(">" + escape(root.text) if root.text else ">")
    stack: list[tuple[Iterator[ET.Element], str, str, str | None]] = [
        (iter(root), "</" + name + ">", ns, None)
    ]
    while stack:
        children, end, ns, tail = stack[-1]
        for child in children:
            child_ns, name = _open(child, ns, out)
            if len(child) == 0:
                text = child.text
                out.append(">" + escape(text) + "</" + name + ">" if text else "/>")
                if child.tail:
                    out.append(escape(child.tail))
                continue
            out.append(">" + escape(child.text) if child.text else ">")
            stack.append((iter(child), "</" + name + ">", child_ns, child.tail))
            break
        else:
            stack.pop()
            out.append(end)
            if tail:
                out.append(escape(tail))


def item_text(item: ET.Element) -> str:
    """Serialise an ``<item>`` as a query returns it, its namespace as the default one.

    Written here rather than with slixmpp's ``tostring``, which escapes character by
    character and was most of the cost of a 1,000-item answer. Iterative, so that no
    depth of nesting is too deep for it.
    """
    out: list[str] = []
    _serialise(item, out)
    return "".join(out)


def parse_items(reply: ET.Element) -> list[PubsubItem]:
    """The items of an items query's answer, in the server's order."""
    return _pubsub_items(_item_elements(reply))


async def parse_items_off_loop(reply: ET.Element) -> list[PubsubItem]:
    """:func:`parse_items` for a large answer (a page of a node's walk): the items are
    serialised in the loop's default executor, :data:`ITEMS_PER_TRIP` a trip, so that a
    page of thousands of items never holds the event loop (a page of 5,000 took it
    about 100 ms). The caller must leave ``reply`` alone meanwhile.

    The item elements are then taken out of ``reply`` (each stays in its
    :class:`PubsubItem`): the stream's parser keeps the last stanza it built until the
    next one arrives, and a page of thousands of items would otherwise stay in memory
    after the walk that read it has ended, as long as the connection stays quiet.
    """
    container = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    if container is None:
        return []
    elements = container.findall(f"{{{NS_PUBSUB}}}item")
    items: list[PubsubItem] = []
    for start in range(0, len(elements), ITEMS_PER_TRIP):
        trip = elements[start : start + ITEMS_PER_TRIP]
        items += await asyncio.to_thread(_pubsub_items, trip)
    for element in elements:
        container.remove(element)
    return items


def _item_elements(reply: ET.Element) -> list[ET.Element]:
    items = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    return [] if items is None else items.findall(f"{{{NS_PUBSUB}}}item")


def _pubsub_items(elements: list[ET.Element]) -> list[PubsubItem]:
    items = []
    for item in elements:
        LOOP_PRIORITY.step_aside()
        items.append(
            PubsubItem(
                id=item.get("id", ""),
                publisher=item.get("publisher", ""),
                xml=item_text(item),
                element=item,
            )
        )
    return items


def parse_rsm(reply: ET.Element) -> tuple[int | None, str | None, str | None, int | None] | None:
    """(count, first, last, first index) of the answer's RSM ``<set/>``; None without."""
    rsm = reply.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_RSM}}}set")
    if rsm is None:
        return None
    count_text = rsm.findtext(f"{{{NS_RSM}}}count")
    first = rsm.find(f"{{{NS_RSM}}}first")
    index = first.get("index") if first is not None else None
    return (
        int(count_text) if count_text and count_text.isdigit() else None,
        first.text if first is not None else None,
        rsm.findtext(f"{{{NS_RSM}}}last"),
        int(index) if index and index.isdigit() else None,
    )


def rsm_set(
    max_items: int, before: str | None = None, after: str | None = None, index: int | None = None
) -> ET.Element:
    """An RSM ``<set/>``: ``before=""`` asks for the last page; no ``after`` the first;
    ``index`` the page that starts at that place (XEP-0059's "page at any point")."""
    rsm = element("set", NS_RSM)
    ET.SubElement(rsm, f"{{{NS_RSM}}}max").text = str(max_items)
    if index is not None:
        ET.SubElement(rsm, f"{{{NS_RSM}}}index").text = str(index)
    elif before is not None:
        ET.SubElement(rsm, f"{{{NS_RSM}}}before").text = before or None
    elif after:
        # ejabberd rejects an empty <after/>: the first page is simply no <after/>.
        ET.SubElement(rsm, f"{{{NS_RSM}}}after").text = after
    return rsm


def read_form(form: ET.Element | None) -> dict[str, str | list[str]]:
    """A data form's fields as strings (multi-valued fields as lists), FORM_TYPE left out."""
    values: dict[str, str | list[str]] = {}
    if form is None:
        return values
    for field in form.findall(f"{{{NS_DATA}}}field"):
        var = field.get("var")
        if not var or var == "FORM_TYPE":
            continue
        texts = [value.text or "" for value in field.findall(f"{{{NS_DATA}}}value")]
        values[var] = texts if field.get("type") in MULTI_FIELDS else (texts[0] if texts else "")
    return values


def submit_form(form_type: str, config: Mapping[str, object]) -> ET.Element:
    """A submitted data form of ``form_type`` holding ``config``.

    Raises:
        InvalidArgument: a value is neither a string nor a list of strings.
    """
    form = element("x", NS_DATA, type="submit")
    hidden = ET.SubElement(form, f"{{{NS_DATA}}}field", var="FORM_TYPE", type="hidden")
    ET.SubElement(hidden, f"{{{NS_DATA}}}value").text = form_type
    for var, value in config.items():
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", var=var)
        values: Sequence[object] = [value] if isinstance(value, str | bool | int) else value  # type: ignore[assignment]
        if not isinstance(values, list | tuple):
            raise InvalidArgument(f"config field {var!r}: give a string or a list of strings")
        for single in values:
            if isinstance(single, bool):
                single = "1" if single else "0"
            if not isinstance(single, str | int):
                raise InvalidArgument(f"config field {var!r}: {single!r} is not a string")
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = str(single)
    return form
