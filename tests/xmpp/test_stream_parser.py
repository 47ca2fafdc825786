"""The XMPP stream parser refuses DTDs, so a server cannot make Roost expand entities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from roost.service.errors import ConnectionFailed
from roost.service.events import EventHub, ProfileConnected
from roost.service.xmpp.client import ConnectionOptions, RoostClient
from roost.service.xmpp.sessions import SessionManager
from roost.service.xmpp.stream_parser import RestrictedStreamParser, RestrictedXmlError
from tests.fixtures.sessions import Recorder

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='localhost' id='s1' version='1.0'>"
)
MESSAGE = b"<message from='a@localhost/r' to='b@localhost'><body>fish &amp; chips</body></message>"


def _entity_bomb(levels: int = 9) -> bytes:
    # Each entity is ten of the previous one: &e9; would be 10**9 copies of "lol".
    entities = [b'<!ENTITY e0 "lol">']
    for level in range(1, levels + 1):
        entities.append(b'<!ENTITY e%d "%s">' % (level, b"&e%d;" % (level - 1) * 10))
    return (
        b"<?xml version='1.0'?><!DOCTYPE stream:stream ["
        + b"".join(entities)
        + b"]>"
        + HEADER.removeprefix(b"<?xml version='1.0'?>")
        + b"<stream:features><bomb>&e%d;</bomb></stream:features>" % levels
    )


def _parse(chunks: Iterable[bytes | str]) -> tuple[RestrictedStreamParser, list[tuple[str, Any]]]:
    parser = RestrictedStreamParser()
    events: list[tuple[str, Any]] = []
    for chunk in chunks:
        parser.feed(chunk)
        events.extend((event, element) for event, element in parser.read_events())
    return parser, events


def _tags(events: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(event, element.tag.rpartition("}")[2]) for event, element in events]


# -- the parser alone ----------------------------------------------------------------------


def test_normal_stream_parses() -> None:
    _parser, events = _parse([HEADER, MESSAGE])
    assert _tags(events) == [
        ("start", "stream"),
        ("start", "message"),
        ("start", "body"),
        ("end", "body"),
        ("end", "message"),
    ]
    message = events[-1][1]
    assert message.find("{jabber:client}body").text == "fish & chips"


def test_predefined_entities_and_character_references() -> None:
    body = b"<message><body>&lt;&gt;&amp;&quot;&apos; &#233;&#x263A; caf\xc3\xa9</body></message>"
    _parser, events = _parse([HEADER, body])
    assert events[-1][1][0].text == "<>&\"' \u00e9\u263a caf\u00e9"


def test_one_byte_at_a_time() -> None:
    data = HEADER + MESSAGE
    _parser, events = _parse(data[i : i + 1] for i in range(len(data)))
    assert [tag for _event, tag in _tags(events)] == [
        "stream",
        "message",
        "body",
        "body",
        "message",
    ]


def test_character_split_between_reads_after_the_prolog() -> None:
    # Past the prolog the bytes go to expat as they come; a character cut in two still
    # reads as one, including one cut exactly when the parser stops decoding.
    cafe = "café".encode()
    _parser, events = _parse([HEADER[:-1], HEADER[-1:] + b"<m>" + cafe[:4], cafe[4:] + b"</m>"])
    assert events[-1][1].text == "café"
    _parser, events = _parse([HEADER + b"<m>" + cafe[:4], cafe[4:], b"</m>"])
    assert events[-1][1].text == "café"


def test_str_is_accepted() -> None:
    _parser, events = _parse([HEADER.decode(), MESSAGE.decode()])
    assert events[-1][1].find("{jabber:client}body").text == "fish & chips"


def test_doctype_refused() -> None:
    data = b"<?xml version='1.0'?><!DOCTYPE stream:stream>" + HEADER[21:]
    with pytest.raises(RestrictedXmlError, match=r"document type declaration \(<!DOCTYPE\)") as e:
        _parse([data])
    assert e.value.condition == "restricted-xml"
    assert "RFC 6120" in str(e.value)


@pytest.mark.parametrize("cut", range(1, len("<!DOCTYPE")))
def test_doctype_split_between_reads_refused(cut: int) -> None:
    start = b"<?xml version='1.0'?>"
    rest = b"<!DOCTYPE stream:stream>" + HEADER[len(start) :]
    with pytest.raises(RestrictedXmlError):
        _parse([start + rest[:cut], rest[cut:]])


def test_doctype_in_tiny_reads_refused() -> None:
    data = b"<?xml version='1.0'?><!-- hello --><!DOCTYPE x>"
    with pytest.raises(RestrictedXmlError):
        _parse(data[i : i + 2] for i in range(0, len(data), 2))


def test_plain_parser_expands_entities() -> None:
    # What the refusal is for: the stock parser slixmpp uses expands a DTD's entities.
    plain = ET.XMLPullParser(("end",))
    plain.feed(b'<!DOCTYPE s [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;">]><s>&b;&b;</s>')
    assert [element.text for _event, element in plain.read_events()] == ["hahahahahaha"]


def test_entity_bomb_never_expands() -> None:
    bomb = _entity_bomb()
    parser = RestrictedStreamParser()
    started = time.monotonic()
    with pytest.raises(RestrictedXmlError):
        parser.feed(bomb)
    # Refused before expat saw a byte: nothing was parsed, so nothing was expanded.
    assert list(parser.read_events()) == []
    assert time.monotonic() - started < 1.0
    with pytest.raises(RestrictedXmlError):
        parser.feed(MESSAGE)


def test_entity_without_dtd_is_a_parse_error() -> None:
    # No DTD, no declarations: expat stops at any entity but the five predefined ones.
    with pytest.raises(ET.ParseError, match="undefined entity"):
        _parse([HEADER, b"<message><body>&e9;</body></message>"])


def test_doctype_after_the_root_is_not_well_formed() -> None:
    # The prolog is searched only; later, expat itself refuses a DTD.
    with pytest.raises(ET.ParseError):
        _parse([HEADER, b"<!DOCTYPE x [<!ENTITY a 'b'>]>"])


def test_cdata_after_the_root_may_mention_doctype() -> None:
    _parser, events = _parse([HEADER, b"<m><![CDATA[<!DOCTYPE html>]]></m>"])
    assert events[-1][1].text == "<!DOCTYPE html>"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_refused(encoding: str) -> None:
    # Expat would read UTF-16 from a byte order mark or from "<" and a NUL, hiding a
    # DOCTYPE from a search of the bytes.
    data = _entity_bomb(2).decode().encode(encoding)
    with pytest.raises(RestrictedXmlError, match="not UTF-8") as e:
        _parse([data])
    assert e.value.condition == "unsupported-encoding"


def test_declared_encoding_ignored() -> None:
    declared = b"<?xml version='1.0' encoding='UTF-16'?>" + HEADER[21:]
    _parser, events = _parse([declared, "<m>é</m>".encode()])
    assert events[-1][1].text == "é"


def test_invalid_utf8_in_prolog_refused() -> None:
    with pytest.raises(RestrictedXmlError, match="not UTF-8"):
        _parse([b"<?xml version='1.0'?>\xff" + HEADER[21:]])


# -- end to end: a hostile server ----------------------------------------------------------


class HostileServer:
    """Answers a client's stream header with a DOCTYPE and an entity bomb, then records
    what the client sends back."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while b"<stream:stream" not in data or not data.endswith(b">"):
                chunk = await reader.read(4096)
                if not chunk:
                    return
                data += chunk
            writer.write(_entity_bomb())
            await writer.drain()
            answer = b""
            while chunk := await reader.read(4096):
                answer += chunk
            self.received.append(answer)
        except ConnectionError:
            self.received.append(b"")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    """A hostile server on loopback, stopped at the end."""
    server = HostileServer()
    await server.start()
    yield server
    await server.close()


async def test_hostile_server_fails_the_session(
    hostile: HostileServer, hub: EventHub, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def lookup(_name: str) -> tuple[str, str, dict[str, Any]]:
        return "mallory@localhost", "pw", {"host": "127.0.0.1", "port": hostile.port, "tls": "none"}

    manager = SessionManager(lookup, hub, connect_timeout=10)
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    try:
        refused = r"'mallory'.*closed: the server sent a document type declaration"
        with pytest.raises(ConnectionFailed, match=refused):
            await manager.connect("mallory")
        assert time.monotonic() - started < 5
        assert not manager.is_connected("mallory")
        assert recorder.of(ProfileConnected) == []
        # The daemon goes on: a new attempt fails the same way, not worse.
        with pytest.raises(ConnectionFailed):
            await manager.connect("mallory")
    finally:
        await manager.close()
    for _ in range(100):
        if len(hostile.received) == 2:
            break
        await asyncio.sleep(0.02)
    # Refused by Roost's parser, not stopped by expat's own limits: the server got the
    # stream error that names the reason.
    assert all(b"<restricted-xml" in answer for answer in hostile.received), hostile.received
    warnings = [r for r in caplog.records if r.name == "roost.service.xmpp.client"]
    assert len(warnings) == 2
    assert warnings[0].levelno == logging.WARNING
    assert f"localhost at 127.0.0.1:{hostile.port}" in warnings[0].getMessage()
    assert "<!DOCTYPE" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_client_uses_the_restricted_parser() -> None:
    client = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    client.init_parser()
    assert isinstance(client.parser, RestrictedStreamParser)
    assert client.xml_depth == 0
