"""A large read from the server is parsed a slice at a time, the event loop turning between
slices, without changing what is parsed or in which order."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from roost.service.xmpp.client import ConnectionOptions, RoostClient
from roost.service.xmpp.sliced_feed import HOLD_ABOVE, PARSE_SLICE, SlicedFeed

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='localhost' id='s1' version='1.0'>"
)


class Recorder:
    """What a :class:`SlicedFeed` did: the pieces parsed, holds and releases."""

    def __init__(self) -> None:
        self.parsed: list[bytes] = []
        self.holds = 0
        self.releases = 0
        self.feed = SlicedFeed(
            self.parsed.append,
            self._hold,
            self._release,
            slice_size=10,
            hold_above=20,
            read_again_at=5,
        )

    def _hold(self) -> None:
        self.holds += 1

    def _release(self) -> None:
        self.releases += 1


async def _turns_until_parsed(feed: SlicedFeed) -> int:
    """The loop turns it took the feed to parse all that waited."""
    turns = 0
    while feed.waiting:
        await asyncio.sleep(0)
        turns += 1
    return turns


async def test_a_read_within_a_slice_is_parsed_at_once() -> None:
    rec = Recorder()
    rec.feed.receive(b"0123456789")
    assert rec.parsed == [b"0123456789"]
    assert (rec.holds, rec.releases) == (0, 0)


async def test_a_large_read_is_parsed_one_slice_a_turn() -> None:
    rec = Recorder()
    data = bytes(range(18))
    rec.feed.receive(data)
    # The first slice at once; the rest waits for the loop's next turn, and the
    # connection goes on reading meanwhile.
    assert rec.parsed == [data[:10]]
    assert rec.feed.waiting == 8
    assert await _turns_until_parsed(rec.feed) == 1
    assert rec.parsed == [data[:10], data[10:]]
    assert (rec.holds, rec.releases) == (0, 0)


async def test_reading_stops_while_too_much_waits_and_starts_again_once_parsed_down() -> None:
    rec = Recorder()
    data = bytes(range(45))
    rec.feed.receive(data)
    assert rec.feed.waiting == 35
    assert (rec.holds, rec.releases) == (1, 0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # 15 bytes wait: still above the level reading starts again at.
    assert rec.feed.waiting == 15
    assert (rec.holds, rec.releases) == (1, 0)
    await asyncio.sleep(0)
    assert rec.feed.waiting == 5
    assert (rec.holds, rec.releases) == (1, 1)
    await _turns_until_parsed(rec.feed)
    assert b"".join(rec.parsed) == data
    assert (rec.holds, rec.releases) == (1, 1)


async def test_reads_arriving_while_slices_wait_are_parsed_after_them() -> None:
    rec = Recorder()
    rec.feed.receive(b"a" * 15)
    rec.feed.receive(b"b" * 3)
    rec.feed.receive(b"c" * 12)
    await _turns_until_parsed(rec.feed)
    assert b"".join(rec.parsed) == b"a" * 15 + b"b" * 3 + b"c" * 12
    assert all(len(piece) <= 10 for piece in rec.parsed)


async def test_flush_parses_what_waits_now_and_clear_drops_it() -> None:
    rec = Recorder()
    rec.feed.receive(b"x" * 35)
    rec.feed.flush()
    assert b"".join(rec.parsed) == b"x" * 35
    assert (rec.holds, rec.releases) == (1, 1)
    await asyncio.sleep(0)
    assert b"".join(rec.parsed) == b"x" * 35

    rec = Recorder()
    rec.feed.receive(b"y" * 35)
    rec.feed.clear()
    for _ in range(3):
        await asyncio.sleep(0)
    assert rec.parsed == [b"y" * 10]
    assert rec.feed.waiting == 0
    assert (rec.holds, rec.releases) == (1, 1)


async def test_a_parse_that_clears_the_feed_stops_the_slices() -> None:
    parsed: list[bytes] = []

    def parse(data: bytes) -> None:
        parsed.append(data)
        if len(parsed) == 2:
            feed.clear()

    feed = SlicedFeed(parse, lambda: None, lambda: None, slice_size=10)
    feed.receive(b"z" * 50)
    for _ in range(6):
        await asyncio.sleep(0)
    assert len(parsed) == 2


# -- in the client, on a real transport -------------------------------------------------


@pytest.fixture
async def connected() -> AsyncIterator[tuple[RoostClient, socket.socket]]:
    """A client on one end of a socket pair (its transport real), the server's end."""
    ours, theirs = socket.socketpair()
    client = RoostClient("bob@localhost", "pw", ConnectionOptions(tls="none"))
    # What slixmpp's connection_made does beyond the transport: the stream header and the
    # session's events are not wanted here.
    client.connection_made = lambda transport, send_event=True: setattr(  # type: ignore[method-assign]
        client, "transport", transport
    )
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(lambda: client, ours)
    client.init_parser()
    try:
        yield client, theirs
    finally:
        transport.abort()
        theirs.close()


def _messages(count: int, first: int = 0) -> bytes:
    body = "word " * 40
    return b"".join(
        f"<message id='m{n}' to='bob@localhost'><body>{body}</body></message>".encode()
        for n in range(first, first + count)
    )


def _spy_stanzas(client: RoostClient) -> list[str]:
    """The ids of the stanzas the client's stream parsing hands to slixmpp, in order."""
    ids: list[str] = []
    spawn = client._spawn_event

    def recording(xml: ET.Element) -> None:
        ids.append(xml.get("id", ""))
        spawn(xml)

    client._spawn_event = recording  # type: ignore[method-assign]
    return ids


async def _parse_waiting(client: RoostClient) -> int:
    return await _turns_until_parsed(client._feed)


async def test_the_client_parses_a_large_read_in_turns_in_order(
    connected: tuple[RoostClient, socket.socket],
) -> None:
    client, _server = connected
    stanzas = _spy_stanzas(client)
    count = HOLD_ABOVE // 200
    stream = HEADER + _messages(count)
    assert len(stream) > HOLD_ABOVE + PARSE_SLICE
    transport = client.transport
    assert transport is not None

    client.data_received(stream)
    # One slice parsed; with this much waiting, the connection reads no more for now.
    assert 0 < len(stanzas) < 100
    assert client._feed.waiting == len(stream) - PARSE_SLICE
    assert not transport.is_reading()
    assert await _parse_waiting(client) >= HOLD_ABOVE // PARSE_SLICE
    assert transport.is_reading()
    assert stanzas == [f"m{n}" for n in range(count)]


async def test_slices_do_not_resume_reading_an_item_stream_holds(
    connected: tuple[RoostClient, socket.socket],
) -> None:
    client, _server = connected
    transport = client.transport
    assert transport is not None
    # As an ItemStream behind its reader does.
    client._hold_reading()
    client.data_received(HEADER + _messages(HOLD_ABOVE // 200))
    await _parse_waiting(client)
    assert not transport.is_reading()
    client._release_reading()
    assert transport.is_reading()


async def test_what_waits_is_parsed_when_the_connection_ends(
    connected: tuple[RoostClient, socket.socket],
) -> None:
    client, _server = connected
    stanzas = _spy_stanzas(client)
    client.data_received(HEADER + _messages(300))
    assert client._feed.waiting
    client.connection_lost(None)
    assert client._feed.waiting == 0
    assert stanzas == [f"m{n}" for n in range(300)]


async def test_a_malformed_stream_stops_the_slices_at_the_error(
    connected: tuple[RoostClient, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    client, _server = connected
    stanzas = _spy_stanzas(client)
    client.data_received(HEADER + _messages(100) + b"<message <<>" + _messages(200, first=100))
    await _parse_waiting(client)
    assert stanzas == [f"m{n}" for n in range(100)]
    # slixmpp answered the error once; the rest of the read was not parsed to fail again.
    errors = [r for r in caplog.records if r.getMessage().startswith("Parse error")]
    assert len(errors) == 1
