"""Passwords never leave the daemon: not in its log (debug level included), not on the
bus (no reply, no signal), not in an error message.

A real ``roostd`` logs at debug level to a file, a bus monitor records every message
the daemon sends, and the test then looks for the password's text and its base64 forms
(SASL PLAIN sends ``authzid NUL user NUL password`` in base64) in all of it.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from roost.bridge.client import RoostClient, RoostDBusError
from roost.bridge.constants import BUS_NAME
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.xmpp import XmppServer, register_in_band

pytestmark = [pytest.mark.dbus, pytest.mark.xmpp]

INTERFACES = ("Profiles", "Storage", "Pubsub", "Cache", "Contacts")


def secret(label: str) -> str:
    """A password no other text of the test run can contain by chance."""
    return f"{label}-{secrets.token_hex(12)}"


def leaked_forms(password: str, user: str, jid: str) -> list[str]:
    """The password and the base64 forms a SASL exchange could carry it in."""
    plain = [f"\0{user}\0{password}", f"{jid}\0{user}\0{password}", f"\0{jid}\0{password}"]
    encoded = [base64.b64encode(text.encode()).decode() for text in [password, *plain]]
    # A base64 text cut into a log line may lose its padding.
    return [password, *encoded, *(text.rstrip("=") for text in encoded)]


def assert_absent(forms: list[str], text: str, where: str) -> None:
    """Fail naming ``where`` if any of ``forms`` occurs in ``text``."""
    for form in forms:
        assert form not in text, f"a form of the password ({form[:12]}…) is in {where}"


class BusRecorder:
    """A bus monitor keeping what one connection (the daemon) sends."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.texts: list[str] = []
        self.replies = 0

    def record(self, message: Message) -> bool:
        """Keep the message's member, error name and body as text.

        True for a method call, which then counts as handled: a monitor that answered
        a method call it saw would be disconnected by the bus.
        """
        if message.sender == self.sender:
            if message.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
                self.replies += 1
            self.texts.append(f"{message.member} {message.error_name} {message.body!r}")
        return message.message_type == MessageType.METHOD_CALL


@pytest.fixture
async def recorder(roostd_launcher: RoostdLauncher) -> AsyncIterator[tuple[Any, BusRecorder]]:
    """A daemon of the test's own and a monitor of everything it sends on the bus."""
    daemon = roostd_launcher.start()
    monitor = await MessageBus(bus_address=daemon.bus_address, bus_type=BusType.SESSION).connect()
    reply = await monitor.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetNameOwner",
            signature="s",
            body=[BUS_NAME],
        )
    )
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
    recorded = BusRecorder(reply.body[0])
    monitor.add_message_handler(recorded.record)
    become = await monitor.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus.Monitoring",
            member="BecomeMonitor",
            signature="asu",
            body=[[], 0],
        )
    )
    assert become is not None and become.message_type == MessageType.METHOD_RETURN
    yield daemon, recorded
    monitor.disconnect()


async def read_everything(client: RoostClient, profile: str) -> None:
    """Call every member that reads what the daemon knows of a profile."""
    await client.list_profiles()
    await client.get_default_profile()
    await client.get_values(profile, "any.namespace", [])
    await client.list_params(profile, "@roost")
    await client.list_params("@global@", "@roost")
    await client.list_contacts(profile)
    await client.call("org.roost.Backend1.Cache", "Search", "a{sv}", [{}])
    for name in INTERFACES:
        await client.call(
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            [f"org.roost.Backend1.{name}"],
        )
    await client.call("org.freedesktop.DBus.Introspectable", "Introspect")


async def test_passwords_never_logged_nor_on_the_bus(
    recorder: tuple[Any, BusRecorder], xmpp_server: XmppServer
) -> None:
    daemon, bus = recorder
    user = f"leak{secrets.token_hex(4)}"
    jid = xmpp_server.jid(user)
    password = secret("RoostPw")
    wrong = secret("WrongPw")
    too_long = secret("LongPw") * 40
    await register_in_band(xmpp_server, user, password)
    forms = [
        *leaked_forms(password, user, jid),
        *leaked_forms(wrong, user, jid),
        *leaked_forms(too_long[:60], user, jid),
    ]
    errors: list[str] = []
    client = await RoostClient.connect(daemon.bus_address)
    try:
        await client.create_profile("good", jid, password, xmpp_server.options())
        await client.connect_profile("good")
        assert await client.is_connected("good")
        await read_everything(client, "good")
        await client.create_profile("bad", jid, wrong, xmpp_server.options())
        with pytest.raises(RoostDBusError) as failed:
            await client.connect_profile("bad")
        assert failed.value.name.endswith(".NotConnected")
        assert "refused the JID or password" in failed.value.message
        errors.append(failed.value.message)
        with pytest.raises(RoostDBusError) as refused:
            await client.create_profile("long", jid, too_long, xmpp_server.options())
        assert refused.value.name.endswith(".InvalidArgument")
        errors.append(refused.value.message)
        await read_everything(client, "bad")
        await client.disconnect_profile("good")
    finally:
        client.close()
    assert daemon.terminate() == 0

    log = daemon.log_text()
    # The log is the debug one, with the stream: the login is there, its content not.
    assert "SEND: <auth" in log or "SEND: <authenticate" in log
    assert "RECV: <success" in log
    assert_absent(forms, log, "the daemon's debug log")
    sasl_content = re.findall(r"<(?:auth|response|challenge|success)\b[^>]*>([^<]+)<", log)
    assert sasl_content, "no SASL element in the debug log"
    assert all(text.startswith("[redacted:") for text in sasl_content), sasl_content
    assert bus.replies >= 20, "the monitor saw too few of the daemon's replies"
    assert_absent(forms, "\n".join(bus.texts), "a message the daemon sent on the bus")
    assert_absent(forms, "\n".join(errors), "an error message")


def url_with_password(postgres_server: PostgresServer, password: str, dbname: str) -> str:
    """A URL of the test cluster that carries ``password`` (trust authentication
    accepts any)."""
    return f"postgresql://{postgres_server.user}:{password}@{postgres_server.host}:{postgres_server.port}/{dbname}"


@pytest.fixture
def failing_urls(postgres_server: PostgresServer) -> Iterator[list[tuple[str, str]]]:
    """Database URLs carrying a password that cannot be opened: (password, url)."""
    urls = []
    for dbname in ("no_such_database", "bad name/x"):
        password = secret("DbPw")
        urls.append((password, url_with_password(postgres_server, password, dbname)))
    password = secret("DbPw")
    urls.append((password, f"postgresql://roost:{password}@127.0.0.1:1/roost"))
    password = secret("DbPw")
    urls.append((password, f"postgresql://roost:{password}@127.0.0.1:notaport/roost"))
    password = secret("DbPw")
    urls.append((password, f"nosuchdialect://roost:{password}@127.0.0.1/roost"))
    yield urls


@pytest.mark.postgresql
@pytest.mark.parametrize("case", range(5))
def test_database_password_not_in_startup_errors(
    roostd_launcher: RoostdLauncher, failing_urls: list[tuple[str, str]], case: int
) -> None:
    password, url = failing_urls[case]
    daemon = roostd_launcher.spawn("--database", url)
    assert daemon.process.wait(60) != 0
    log = daemon.log_text()
    assert "cannot open the database" in log
    assert_absent([password, base64.b64encode(password.encode()).decode()], log, "the log")


@pytest.mark.postgresql
async def test_database_password_not_logged_nor_in_copy_errors(
    roostd_launcher: RoostdLauncher, postgres_server: PostgresServer, postgresql_url: str
) -> None:
    password = secret("DbPw")
    dbname = postgresql_url.rsplit("/", 1)[1]
    daemon = roostd_launcher.start(
        "--database", url_with_password(postgres_server, password, dbname)
    )
    target_password = secret("CopyPw")
    target = url_with_password(postgres_server, target_password, "no_such_copy_target")
    client = await RoostClient.connect(daemon.bus_address)
    try:
        await client.create_profile("p", "p@localhost", secret("Pw"), {"tls": "none"})
        with pytest.raises(RoostDBusError) as failed:
            await client.copy_database(target)
        await client.set_value("p", "ns", "k", Variant("s", "v"))
    finally:
        client.close()
    assert daemon.terminate() == 0
    assert "***" in daemon.log_text(), "the database's URL is logged with its password hidden"
    for text, where in ((daemon.log_text(), "the log"), (failed.value.message, "the error")):
        assert_absent([password, target_password], text, where)
