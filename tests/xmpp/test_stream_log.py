"""No SASL payload reaches slixmpp's stream log, at any level, for any login; no record
quotes more than a bounded part of the stream."""

from __future__ import annotations

import base64
import logging
import re
import xml.etree.ElementTree as ET

import pytest

from roost.service.events import EventHub
from roost.service.xmpp import stream_log
from roost.service.xmpp.client import ConnectionOptions, RoostClient
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.sessions import make_lookup
from tests.fixtures.xmpp import XmppServer

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAM_LOGGER = "slixmpp.xmlstream.xmlstream"
# What a SASL element's content may be in the log: the marker, or nothing.
SASL_CONTENT = re.compile(r"<(auth|response|challenge|success)\b[^>]*?(?<!/)>([^<]*)")


def base64_forms(secret: bytes) -> set[str]:
    """The base64 text ``secret`` turns into wherever it sits in an encoded stream: for
    each of the three alignments, the characters that depend on ``secret`` alone."""
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret).decode()
        # Only the characters whose six bits all come from ``secret``.
        start = (shift * 4 + 2) // 3
        end = (4 * (shift + len(secret))) // 3
        if end > start:
            forms.add(encoded[start:end])
    return forms


def record(msg: str, *args: object, level: int = logging.DEBUG) -> logging.LogRecord:
    """A record of ``msg % args`` on the stream logger, passed through the filter."""
    rec = logging.LogRecord(STREAM_LOGGER, level, __file__, 1, msg, args, None)
    assert stream_log.StreamLogFilter().filter(rec)
    return rec


def test_redacts_sasl_content() -> None:
    plain = f'<auth xmlns="{SASL}" mechanism="PLAIN">AGJvYgBTM2NyZXQ=</auth>'
    assert stream_log.redact(plain) == (
        f'<auth xmlns="{SASL}" mechanism="PLAIN">[redacted: 16 bytes]</auth>'
    )
    # Redacting twice changes nothing.
    assert stream_log.redact(stream_log.redact(plain)) == stream_log.redact(plain)
    for tag in ("response", "challenge", "success"):
        text = f"<{tag} xmlns='{SASL}'>cj1hYmM=</{tag}>"
        assert stream_log.redact(text) == f"<{tag} xmlns='{SASL}'>[redacted: 8 bytes]</{tag}>"
    # A prefixed element, a read cut in the middle of one, SASL 2's initial response.
    assert "c2VjcmV0" not in stream_log.redact(f"<s:auth xmlns:s='{SASL}'>c2VjcmV0</s:auth>")
    assert stream_log.redact(f"<challenge xmlns='{SASL}'>c2Vj") == (
        f"<challenge xmlns='{SASL}'>[redacted: 4 bytes]"
    )
    sasl2 = (
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>"
        "<initial-response>AGJvYgBT</initial-response></authenticate>"
    )
    assert "AGJvYgBT" not in stream_log.redact(sasl2)
    # Empty elements and failures stay as they are; so does anything outside SASL.
    for kept in (
        f"<success xmlns='{SASL}'/>",
        f"<failure xmlns='{SASL}'><not-authorized/></failure>",
        "<message><response>kept</response></message>",
    ):
        assert stream_log.redact(kept) == kept


async def test_filter_on_strings_bytes_and_stanzas() -> None:
    sent = record("SEND: %s", f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGJvYgBT</auth>")
    assert sent.getMessage() == (
        f"SEND: <auth xmlns='{SASL}' mechanism='PLAIN'>[redacted: 8 bytes]</auth>"
    )
    # slixmpp quotes the bytes it could not parse with %r.
    data = f"<success xmlns='{SASL}'>dj1hYmM=</success>".encode()
    for fmt in ("Parse error: %r", "Parse error: %s"):
        message = record(fmt, data, level=logging.ERROR).getMessage()
        assert "dj1hYmM" not in message and "[redacted: 8 bytes]" in message
    assert record("Parse error: %r", b"<a/>").getMessage() == "Parse error: b'<a/>'"
    # A received stanza is formatted only when the record is, and redacted then.
    client = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    challenge = ET.fromstring(f"<challenge xmlns='{SASL}'>cj1hYmM=</challenge>")
    rec = record("RECV: %s", client._build_stanza(challenge))
    assert isinstance(rec.args, tuple) and not isinstance(rec.args[0], str)
    assert "cj1hYmM" not in rec.getMessage() and "[redacted: 8 bytes]" in rec.getMessage()
    # A tuple argument (slixmpp logs its discarded queue entries as such).
    rec = record("Discarded stanza: %s", (f"<response xmlns='{SASL}'>cD0x</response>", True))
    assert "cD0x" not in rec.getMessage()


async def test_a_large_stanza_is_quoted_in_part_saying_how_much_was_left_out() -> None:
    bound = stream_log.MAX_QUOTED_CHARS
    item = "<item id='i'><entry>" + "x" * 1000 + "</entry></item>"
    answer = f"<iq type='result'><pubsub><items node='n'>{item * 200}</items></pubsub></iq>"
    assert len(answer) > 5 * bound
    client = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    stanza = client._build_stanza(ET.fromstring(answer))
    whole = str(stanza)
    for arg, quoted in (
        (answer, answer),
        (answer.encode(), repr(answer.encode())),
        (stanza, whole),
    ):
        message = record("RECV: %s", arg).getMessage()
        left_out = len(quoted) - bound
        assert message == f"RECV: {quoted[:bound]}… [{left_out:,} more characters not logged]"
    # A stanza within the bound is quoted whole.
    assert record("SEND: %s", item).getMessage() == f"SEND: {item}"


async def test_a_secret_across_the_bound_is_redacted_before_the_cut() -> None:
    bound = stream_log.MAX_QUOTED_CHARS
    # The <auth/> element starts before the cut and its content runs past it.
    secret = base64.b64encode(b"\0bob\0" + b"s" * bound).decode()
    sent = "x" * (bound - 100) + f"<auth xmlns='{SASL}' mechanism='PLAIN'>{secret}</auth>"
    message = record("SEND: %s", sent).getMessage()
    assert secret[:50] not in message
    assert f"[redacted: {len(secret)} bytes]" in message


async def test_deep_stanza_in_the_log() -> None:
    # slixmpp's serialiser recurses; a deep stanza must not make formatting fail.
    client = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    depth = 5000
    xml = ET.fromstring(
        "<message xmlns='jabber:client' from='pubsub.example.org'>"
        + "<a xmlns='urn:x'>" * depth
        + "</a>" * depth
        + "</message>"
    )
    message = record("RECV: %s", client._build_stanza(xml)).getMessage()
    assert message == f"RECV: [{{jabber:client}}message: {depth + 1} elements deep, not shown]"


async def test_installed_once_by_every_client() -> None:
    RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    RoostClient("b@example.org", "pw", ConnectionOptions())
    filters = logging.getLogger(STREAM_LOGGER).filters
    assert sum(isinstance(f, stream_log.StreamLogFilter) for f in filters) == 1


@pytest.mark.xmpp
@pytest.mark.parametrize("mechanism", ["PLAIN", None])
async def test_login_leaves_no_secret_in_the_log(
    xmpp_server: XmppServer, caplog: pytest.LogCaptureFixture, mechanism: str | None
) -> None:
    """A real login with tls none (PLAIN forced, or the best mechanism offered: SCRAM),
    slixmpp logging at debug: the SASL exchange shows as redacted, the password nowhere."""
    manager = SessionManager(make_lookup(xmpp_server), EventHub())
    if mechanism:

        def force(_profile: str, client: RoostClient) -> None:
            client.plugin["feature_mechanisms"].use_mech = mechanism

        manager.on_client(force)
    caplog.set_level(logging.DEBUG, logger="slixmpp")
    try:
        await manager.connect("alice")
    finally:
        await manager.close()
    user, password = "alice", xmpp_server.users["alice"]
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    sasl = SASL_CONTENT.findall(logged)
    assert sasl, "the SASL exchange is not in the log at all"
    assert all(content.startswith("[redacted: ") for _tag, content in sasl), sasl
    assert password not in logged
    secrets = base64_forms(password.encode())
    secrets |= base64_forms(f"\0{user}\0{password}".encode())
    secrets |= base64_forms(f"n,,n={user},r=".encode())
    assert not [form for form in secrets if form in logged]
    if mechanism == "PLAIN":
        assert re.search(r'<auth [^>]*mechanism="PLAIN"[^>]*>\[redacted: \d+ bytes\]', logged)
