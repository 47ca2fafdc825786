"""The slixmpp client behind one profile's XMPP session.

It loads the plugins Roost uses (disco, pubsub, RSM, entity capabilities, PEP), applies
the profile's connection options, and advertises ``+notify`` for the PEP nodes the daemon
cares about so that the server pushes their events, telling when the server has taken a
new one in (:meth:`RoostClient.notify_known`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from roost.service.errors import ConnectionFailed, InvalidArgument
from roost.service.xmpp import stream_log
from roost.service.xmpp.item_stream import (
    PUBSUB_ITEMS_PATH,
    ItemStream,
    StreamingItemsParser,
)
from roost.service.xmpp.sliced_feed import SlicedFeed
from roost.service.xmpp.stream_parser import (
    RestrictedStreamParser,
    RestrictedXmlError,
    stream_error,
)

log = logging.getLogger(__name__)

TLS_MODES = ("required", "starttls", "none")
DEFAULT_PORT = 5222
DEFAULT_DIRECT_TLS_PORT = 5223

# PEP nodes every session listens to; others are added at runtime with add_notify().
DEFAULT_NOTIFY = ("urn:xmpp:microblog:0",)
# How long the server may take to take in a new +notify feature: the new presence, its
# disco#info query for the new capabilities and the answer, and two round trips. Generous
# for a loaded machine; past it, the node is not taken for current.
NOTIFY_BARRIER_TIMEOUT = 30.0
# How long a request to the server may go unanswered before the caller is told
# (``Xmpp.RemoteServerTimeout``); ``[xmpp] request_timeout`` in the config file.
DEFAULT_REQUEST_TIMEOUT = 60.0

_NS_CLIENT = "jabber:client"
_NS_CAPS = "http://jabber.org/protocol/caps"
_NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
_NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
_NS_PUBSUB = "http://jabber.org/protocol/pubsub"
_NS_ROSTER = "jabber:iq:roster"

# The lists of items in an iq result that Roost reads as XML (pubsub items, disco#items
# listings; see RoostClient._build_stanza): their items are never made into slixmpp
# stanza objects.
ITEM_LISTS = (f"{{{_NS_PUBSUB}}}pubsub/{{{_NS_PUBSUB}}}items", f"{{{_NS_DISCO_ITEMS}}}query")

# The pubsub event handlers slixmpp's XEP-0060 plugin registers. Roost reads pubsub
# notifications itself (roost.service.pubsub.events), and they would only raise slixmpp
# events nobody listens to. The "Items" one also fails on every notification of several
# items that carries an xml:lang (servers stamp one): it deletes the key "pubsub_event"
# from the message's values, where that key is then "pubsub_event|<lang>". The KeyError
# was logged as two ERROR tracebacks and answered with an error stanza to the sender, so
# anyone who can send the account a message could flood its log. Removed at set-up.
SLIXMPP_PUBSUB_EVENT_HANDLERS = (
    "Pubsub Event: Items",
    "Pubsub Event: Purge",
    "Pubsub Event: Delete",
    "Pubsub Event: Configuration",
    "Pubsub Event: Subscription",
)

# slixmpp's handler of roster pushes (RFC 6121, 2.1.6), replaced by RoostClient's own: it
# refuses a push from anyone but the account's server with an error whose code it sets as
# a number, which its serialiser cannot write. The error never left (the sender waited
# for its timeout) and each refusal was an ERROR traceback in the log ("Exception raised
# in send queue"), so anyone who can reach the account's full JID could flood its log.
SLIXMPP_ROSTER_PUSH_HANDLER = "Roster Update"


@dataclass(frozen=True)
class ConnectionOptions:
    """Where and how to reach the server: host and port (empty/0: the JID's domain),
    the TLS mode, one of ``required`` (direct TLS), ``starttls`` or ``none``, and how
    the server's certificate is checked.

    The certificate is verified by default, against the system's certificate
    authorities, and must name the JID's domain. ``ca_file`` trusts the authorities of
    that PEM file instead (and only them: a server with a certificate of its own making,
    say); ``verify_certificate`` false accepts any certificate, so that the link is
    encrypted but anyone on the path can read it.
    """

    host: str = ""
    port: int = 0
    tls: str = "starttls"
    autoconnect: bool = False
    verify_certificate: bool = True
    ca_file: str = ""

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ConnectionOptions:
        """Validate a profile's option dictionary.

        Raises:
            InvalidArgument: an option has the wrong type or value.
        """
        host = options.get("host", "") or ""
        if not isinstance(host, str):
            raise InvalidArgument("the host option must be a string")
        port = options.get("port", 0) or 0
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"the port option must be a number from 1 to 65535, not {port!r}")
        tls = options.get("tls", "starttls") or "starttls"
        if tls not in TLS_MODES:
            raise InvalidArgument(
                f"the tls option must be one of {', '.join(TLS_MODES)}, not {tls!r}"
            )
        autoconnect = bool(options.get("autoconnect", False))
        verify = options.get("verify_certificate", True)
        if not isinstance(verify, bool):
            raise InvalidArgument("the verify_certificate option must be a boolean")
        ca_file = options.get("ca_file", "") or ""
        if not isinstance(ca_file, str):
            raise InvalidArgument("the ca_file option must be a path")
        return cls(
            host=host,
            port=port,
            tls=tls,
            autoconnect=autoconnect,
            verify_certificate=verify,
            ca_file=ca_file,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for the server's certificate, as the options ask.

        Raises:
            ConnectionFailed: ``ca_file`` cannot be read or holds no certificate.
        """
        if not self.verify_certificate:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if not self.ca_file:
            return ssl.create_default_context()
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConnectionFailed(
                f"the profile's ca_file {self.ca_file!r} cannot be used ({reason}): give "
                "a readable file of PEM certificates"
            ) from None


SessionStep = Callable[["RoostClient"], Awaitable[None]]

# Fired once the session is set up (the steps done, the first presence sent): the
# session manager counts a session as up from then on, not from slixmpp's session_start.
SESSION_READY = "roost_session_ready"


class RoostClient(ClientXMPP):
    """A ClientXMPP with Roost's plugins and connection policy.

    ``session_steps`` run when a session starts, in order, before the first presence
    leaves (the roster is read there, as RFC 6121 asks); then :data:`SESSION_READY` fires.
    Presence subscription requests are neither approved nor refused here (slixmpp's
    default approves them all): the contacts service answers them when the person does.

    Plain-text authentication is allowed only when the TLS mode is ``none`` (a loopback
    or otherwise trusted link); ``required`` and ``starttls`` never send credentials in
    clear. A ``starttls`` connection to a server that does not offer STARTTLS fires the
    ``tls_unavailable`` event and is closed. SASL payloads never reach slixmpp's stream
    log (:mod:`roost.service.xmpp.stream_log`), and slixmpp's own pubsub event handlers
    are removed (see :data:`SLIXMPP_PUBSUB_EVENT_HANDLERS`). The items of an iq result's
    pubsub items or disco#items listing stay plain XML (see :meth:`_build_stanza`).
    """

    def __init__(
        self,
        jid: str,
        password: str,
        options: ConnectionOptions,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        # Before anything is sent: the SASL exchange must never reach the stream log.
        stream_log.install()
        super().__init__(jid, password)
        self.ssl_context = options.ssl_context()
        self.options = options
        self.request_timeout = request_timeout
        # Resolved when the current connection ends (see connection_ended).
        self._ended: asyncio.Future[None] | None = None
        unencrypted = options.tls == "none"
        self.enable_direct_tls = options.tls == "required"
        self.enable_starttls = options.tls == "starttls"
        self.enable_plaintext = unencrypted
        mechanisms = self.plugin["feature_mechanisms"]
        mechanisms.unencrypted_plain = unencrypted
        mechanisms.unencrypted_scram = unencrypted
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0060")
        self.register_plugin("xep_0115")
        self.register_plugin("xep_0163")
        self.register_plugin("xep_0199")
        for name in SLIXMPP_PUBSUB_EVENT_HANDLERS:
            self.remove_handler(name)
        self.remove_handler(SLIXMPP_ROSTER_PUSH_HANDLER)
        self.register_handler(
            Callback(
                SLIXMPP_ROSTER_PUSH_HANDLER,
                # Not slixmpp's StanzaPath("iq@type=set/roster"): it missed the pushes a
                # component sent through Prosody (stamped with an xml:lang), which then
                # went unhandled.
                MatchXPath(f"{{{_NS_CLIENT}}}iq/{{{_NS_ROSTER}}}query"),
                self._on_roster_iq,
            )
        )
        self.auto_authorize = None
        self.auto_subscribe = False
        self.session_steps: list[SessionStep] = []
        self._notify: set[str] = set()
        self._background: set[asyncio.Future[None]] = set()
        # What the server knows of the +notify features (see notify_known): those of the
        # session's first presence and those a barrier saw taken in; the namespaces each
        # caps version is known to cover; the version the last presence carried; the
        # versions the server asked about, and its queries not answered yet.
        self._known_notify: set[str] = set()
        self._ver_covers: dict[str, frozenset[str]] = {}
        self._sent_ver: str | None = None
        self._queried_vers: set[str] = set()
        self._unanswered: set[str] = set()  # stanza ids
        self._caps_moved = asyncio.Event()
        # Reasons the connection is not read now (item streams behind, slices of a read
        # waiting to be parsed): it reads again when none is left.
        self._reading_holds = 0
        self._feed = SlicedFeed(self._parse_received, self._hold_reading, self._release_reading)
        self.add_filter("in", self._watch_caps_query)
        self.add_filter("out_sync", self._watch_caps_sent)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._end_connection)
        for namespace in DEFAULT_NOTIFY:
            self.add_notify(namespace)

    def connection_ended(self) -> asyncio.Future[None]:
        """A future resolved when the current connection ends (at once when there is
        none), for a caller waiting on an answer to race against.

        slixmpp leaves a request whose connection was lost waiting for its full timeout:
        its answer can no longer come, and the caller should hear so at once.
        """
        if self._ended is None or self._ended.done():
            self._ended = asyncio.get_running_loop().create_future()
            if not self.is_connected():
                self._ended.set_result(None)
        return self._ended

    def _end_connection(self, _reason: Any) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)
        self._ended = None

    def init_parser(self) -> None:
        """Start parsing a new stream with a parser that refuses DTDs (entity bombs) and
        hands the items of expected answers on as they are parsed (:meth:`expect_items`)."""
        super().init_parser()
        self.parser = StreamingItemsParser()

    def expect_items(self, iq_id: str, path: tuple[str, ...] = PUBSUB_ITEMS_PATH) -> ItemStream:
        """The stream the items of the iq result ``iq_id`` will go to as they are parsed
        (the elements at ``path`` under the iq), reading the connection only while its
        reader keeps up; :meth:`forget_items` when done with it."""
        stream = ItemStream(self._hold_reading, self._release_reading, path)
        if isinstance(self.parser, StreamingItemsParser):
            self.parser.expect(iq_id, stream)
        return stream

    def forget_items(self, iq_id: str, stream: ItemStream) -> None:
        """Let the answer ``iq_id`` go to slixmpp whole again, and ``stream`` go."""
        if isinstance(self.parser, StreamingItemsParser):
            self.parser.forget(iq_id)
        stream.close()

    def _hold_reading(self) -> None:
        self._reading_holds += 1
        if self._reading_holds == 1 and self.transport is not None:
            self.transport.pause_reading()

    def _release_reading(self) -> None:
        if self._reading_holds == 0:
            # A hold of a connection that has ended since.
            return
        self._reading_holds -= 1
        transport = self.transport
        if self._reading_holds == 0 and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def connection_made(self, transport: Any, send_event: bool = True) -> None:
        """A new connection (or the same one upgraded to TLS) reads from the start."""
        self._feed.clear()
        self._reading_holds = 0
        super().connection_made(transport, send_event)

    def connection_lost(self, exception: BaseException | None) -> None:
        """Parse what the server sent before it went (slices still waiting), then end."""
        self._feed.flush()
        self._reading_holds = 0
        super().connection_lost(exception)

    def data_received(self, data: bytes | str) -> None:
        """Parse the server's data, a large read a slice at a time
        (:class:`~roost.service.xmpp.sliced_feed.SlicedFeed`)."""
        if isinstance(data, str):
            data = data.encode()
        self._feed.receive(data)

    def _parse_received(self, data: bytes) -> None:
        """Parse one piece of the stream; a stream the parser refuses, or any failure to
        read it, ends the connection."""
        try:
            super().data_received(data)
        except RestrictedXmlError as exc:
            # Left to asyncio, this would be a "Fatal error" traceback. RFC 6120 asks for a
            # stream error; then abort rather than wait for such a server to close its
            # stream. "disconnected" carries the reason to the session manager.
            server = f"the XMPP server of {self.boundjid.domain}"
            if self.transport is not None:
                peer = self.transport.get_extra_info("peername")
                if peer:
                    server += f" at {peer[0]}:{peer[1]}"
                self.send_raw(stream_error(exc.condition))
            log.warning("closing the connection to %s: %s", server, exc)
            self.disconnect_reason = str(exc)
            self._feed.clear()
            self.abort()
        except Exception:
            # What asyncio's transport does with a protocol that fails on its data, now
            # that a slice may be parsed outside of the transport's own call.
            log.exception("reading the stream from %s failed", self.boundjid.domain)
            self._feed.clear()
            self.abort()
        else:
            parser = self.parser
            if isinstance(parser, RestrictedStreamParser) and parser.failed:
                # slixmpp answered the malformed stream and is closing it; the rest of
                # the read would only fail again.
                self._feed.clear()

    def _build_stanza(self, xml: ET.Element, default_ns: str | None = None) -> StanzaBase:
        """The stanza object of a received element; the items of an iq result's lists
        (:data:`ITEM_LISTS`) are left out of it.

        slixmpp makes a stanza object of every element its plugins know, recursively, as
        soon as a stanza arrives: for a page of 5,000 pubsub items that was 5,000 item
        objects and about 130 ms of the event loop, for objects nobody reads (Roost reads
        the items from the stanza's XML, ``stanza.xml``). The items are taken out while
        the stanza object is built, then put back in place, in order, so the XML is
        whole; only the list's stanza interface (``iq['pubsub']['items']`` iterated,
        ``iq['disco_items']['items']``) sees no items.
        """
        held: list[tuple[ET.Element, list[ET.Element]]] = []
        if xml.tag == f"{{{_NS_CLIENT}}}iq" and xml.get("type") == "result":
            for path in ITEM_LISTS:
                for container in xml.iterfind(path):
                    if len(container):
                        held.append((container, list(container)))
                        del container[:]
        try:
            return super()._build_stanza(xml, default_ns)
        finally:
            for container, items in held:
                container.extend(items)

    def server_address(self) -> tuple[str, int] | None:
        """The (host, port) to connect to, or None to resolve the JID's domain."""
        if not self.options.host and not self.options.port:
            return None
        default = DEFAULT_DIRECT_TLS_PORT if self.options.tls == "required" else DEFAULT_PORT
        return self.options.host or self.boundjid.domain, self.options.port or default

    @property
    def notify_namespaces(self) -> frozenset[str]:
        """The PEP nodes this client asks notifications for."""
        return frozenset(self._notify)

    def add_notify(self, namespaces: str | Iterable[str]) -> None:
        """Advertise ``<namespace>+notify`` so that the server sends these PEP events.

        Takes effect at once: the caps hash is recomputed and, when the session is up,
        presence is sent again with it.
        """
        new = {namespaces} if isinstance(namespaces, str) else set(namespaces)
        new -= self._notify
        if not new:
            return
        self._notify |= new
        # Disco features belong to the bound full JID, known once the session is up;
        # before that, session start adds them all.
        if self.sessionstarted:
            for namespace in new:
                self.plugin["xep_0030"].add_feature(f"{namespace}+notify")
            self._spawn_refresh()

    def remove_notify(self, namespace: str) -> None:
        """Stop advertising ``<namespace>+notify``."""
        if namespace not in self._notify:
            return
        self._notify.discard(namespace)
        self._known_notify.discard(namespace)
        if self.sessionstarted:
            self.plugin["xep_0030"].del_feature(feature=f"{namespace}+notify")
            self._spawn_refresh()

    async def notify_known(
        self,
        namespace: str,
        timeout: float = NOTIFY_BARRIER_TIMEOUT,  # noqa: ASYNC109 (bounds several waits)
    ) -> bool:
        """Wait until the server has taken in ``<namespace>+notify``; whether it has.

        :meth:`add_notify` only changes the capabilities: the server sends the node's
        events once it has processed the presence carrying them and, for a version it
        does not know, asked this client's disco#info and read the answer. So: wait
        until a presence covering the namespace has left; then make a round trip to the
        server (it processes a stream's stanzas in order, so the presence was processed
        when the answer comes); if the server asked about that version meanwhile, wait
        until it was answered, and make one more round trip.

        A namespace of the session's first presence, or already seen taken in, returns
        at once. False when the namespace is not advertised, or when the server did not
        get there within ``timeout`` seconds (or the session went down).
        """
        if namespace in self._known_notify:
            return True
        if namespace not in self._notify or not self.sessionstarted:
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._until(lambda: namespace in self._sent_covers())
                ver = self._sent_ver
                await self._round_trip(timeout)
                if ver in self._queried_vers:
                    await self._until(lambda: not self._unanswered)
                    await self._round_trip(timeout)
        except (TimeoutError, IqTimeout):
            return False
        if ver is not None:
            self._known_notify |= self._ver_covers.get(ver, frozenset()) & self._notify
        return namespace in self._known_notify

    def _sent_covers(self) -> frozenset[str]:
        """The +notify namespaces the last presence sent is known to cover."""
        if self._sent_ver is None:
            return frozenset()
        return self._ver_covers.get(self._sent_ver, frozenset())

    async def _until(self, check: Callable[[], bool]) -> None:
        while not check():
            await self._caps_moved.wait()

    def _caps_progress(self) -> None:
        self._caps_moved.set()
        self._caps_moved = asyncio.Event()

    async def _round_trip(self, timeout: float) -> None:  # noqa: ASYNC109
        """A ping to the account's server and its answer (an error answer counts)."""
        with contextlib.suppress(IqError):
            await self.plugin["xep_0199"].send_ping(JID(self.boundjid.domain), timeout=timeout)

    def _caps_ver(self, node: str | None) -> str | None:
        """The version a disco#info node names, when it is one of this client's caps."""
        prefix = f"{self.plugin['xep_0115'].caps_node}#"
        return node[len(prefix) :] if node and node.startswith(prefix) else None

    def _on_roster_iq(self, iq: StanzaBase) -> None:
        """Hand a roster push from the account's server on (``roster_update``); refuse
        one from anyone else with ``service-unavailable`` (RFC 6121, 2.1.6), and log it.

        A push comes without ``from`` or from the account's bare JID; a contact's client,
        a service or another resource of the account may send a roster ``set`` to this
        resource too, and it must change nothing."""
        kind = iq.xml.get("type")
        if kind != "set":
            if kind == "get":
                iq.unhandled()  # feature-not-implemented, as for any unknown query
            return  # a result or an error goes to the request it answers
        sender = iq["from"]
        if sender and sender != self.boundjid.bare:
            log.warning(
                "%s: a roster push from %s was refused: only the account's server may "
                "change its roster",
                self.boundjid.bare,
                sender,
            )
            reply = iq.reply()
            reply["type"] = "error"
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = "service-unavailable"
            reply.send()
            return
        self.event("roster_update", iq)

    def _watch_caps_query(self, stanza: StanzaBase) -> StanzaBase:
        """Note the server's disco#info queries about this client's capabilities."""
        xml = stanza.xml
        if xml.tag == f"{{{_NS_CLIENT}}}iq" and xml.get("type") == "get":
            query = xml.find(f"{{{_NS_DISCO_INFO}}}query")
            ver = self._caps_ver(query.get("node")) if query is not None else None
            if ver is not None:
                self._queried_vers.add(ver)
                self._unanswered.add(xml.get("id", ""))
                self._caps_progress()
        return stanza

    def _watch_caps_sent(self, stanza: StanzaBase) -> StanzaBase:
        """Note, as they leave, the broadcast presences' caps and the answers to the
        server's caps queries."""
        xml = stanza.xml
        if xml.tag == f"{{{_NS_CLIENT}}}presence" and not xml.get("to"):
            caps = xml.find(f"{{{_NS_CAPS}}}c")
            if caps is not None and caps.get("ver"):
                self._sent_ver = caps.get("ver")
                self._caps_progress()
        elif (
            xml.tag == f"{{{_NS_CLIENT}}}iq"
            and xml.get("id") in self._unanswered
            and xml.get("type") in ("result", "error")
        ):
            self._unanswered.discard(xml.get("id", ""))
            self._caps_progress()
        return stanza

    def _spawn_refresh(self) -> None:
        task = asyncio.ensure_future(self._refresh_caps())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_caps(self) -> None:
        await self._update_caps()
        if self.sessionstarted:
            self.send_presence()

    async def _update_caps(self) -> None:
        """Recompute the caps version, noting which +notify namespaces it covers (those
        advertised before it was computed)."""
        covers = frozenset(self._notify)
        caps = self.plugin["xep_0115"]
        await caps.update_caps(broadcast=False)
        ver = await caps.get_verstring(self.boundjid.full)
        if ver:
            self._ver_covers[ver] = covers | self._ver_covers.get(ver, frozenset())

    async def _on_session_start(self, _event: Any) -> None:
        for step in self.session_steps:
            try:
                await step(self)
            except Exception as exc:
                # A step that fails (a roster request timing out) must not keep the
                # session from coming up: the stored state serves meanwhile.
                log.warning("%s: a session set-up step failed: %s", self.boundjid.bare, exc)
        # The caps hash must cover the +notify features before the first presence leaves,
        # or the server would not know this client wants PEP events.
        for namespace in self._notify:
            self.plugin["xep_0030"].add_feature(f"{namespace}+notify")
        self._ver_covers.clear()
        self._sent_ver = None
        self._queried_vers.clear()
        self._unanswered.clear()
        await self._update_caps()
        # The first presence's features count as known: the server sends their nodes'
        # last items once it has taken them in.
        self._known_notify = set(self._notify)
        self.send_presence()
        self.event(SESSION_READY)

    async def _handle_stream_features(self, features: Any) -> bool | None:
        # slixmpp silently goes on in clear when STARTTLS is enabled but not offered;
        # Roost refuses, since the profile asked for TLS.
        if (
            self.options.tls == "starttls"
            and "starttls" not in self.features
            and "starttls" not in features["features"]
        ):
            self.event("tls_unavailable")
            self.abort()
            return True
        result: bool | None = await super()._handle_stream_features(features)
        return result
