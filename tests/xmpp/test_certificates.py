"""The server's certificate is verified by default: a self-signed one is refused unless
the profile trusts it (``ca_file``) or turns verification off (``verify_certificate``).

Against a real Prosody requiring TLS, on STARTTLS and on direct TLS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.errors import ConnectionFailed, InvalidArgument
from roost.service.events import EventHub
from roost.service.profiles import check_options
from roost.service.xmpp.client import ConnectionOptions
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.sessions import make_lookup
from tests.fixtures.tls_prosody import TlsProsodyServer, tls_prosody_server

pytestmark = pytest.mark.xmpp

__all__ = ["tls_prosody_server"]

MODES = ["starttls", "required"]


@pytest.fixture
async def manager_for(
    tls_prosody_server: TlsProsodyServer,
) -> AsyncIterator[Any]:
    """Makes SessionManagers for bob on the TLS server with the given options; closes them."""
    made: list[SessionManager] = []

    def make(mode: str, **options: Any) -> SessionManager:
        server = tls_prosody_server
        port = server.direct_tls_port if mode == "required" else server.port
        overrides = {"bob": {"tls": mode, "port": port, **options}}
        manager = SessionManager(make_lookup(server, overrides), EventHub(), connect_timeout=15)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


@pytest.mark.parametrize("mode", MODES)
async def test_self_signed_certificate_refused_by_default(manager_for: Any, mode: str) -> None:
    manager = manager_for(mode)
    with pytest.raises(ConnectionFailed, match=r"certificate of the server .* cannot be trusted"):
        await manager.connect("bob")
    assert not manager.is_connected("bob")


@pytest.mark.parametrize("mode", MODES)
async def test_certificate_trusted_through_ca_file(
    manager_for: Any, tls_prosody_server: TlsProsodyServer, mode: str
) -> None:
    manager = manager_for(mode, ca_file=str(tls_prosody_server.certificate))
    jid = await manager.connect("bob")
    assert jid.startswith(tls_prosody_server.jid("bob") + "/")
    assert manager.client("bob").is_connected()


@pytest.mark.parametrize("mode", MODES)
async def test_ca_file_of_another_certificate_refused(
    manager_for: Any, tls_prosody_server: TlsProsodyServer, mode: str
) -> None:
    # The same domain, a different key: only the authority the profile names counts.
    manager = manager_for(mode, ca_file=str(tls_prosody_server.other_certificate))
    with pytest.raises(ConnectionFailed, match="cannot be trusted"):
        await manager.connect("bob")


@pytest.mark.parametrize("mode", MODES)
async def test_verification_turned_off(
    manager_for: Any, tls_prosody_server: TlsProsodyServer, mode: str
) -> None:
    manager = manager_for(mode, verify_certificate=False)
    jid = await manager.connect("bob")
    assert jid.startswith(tls_prosody_server.jid("bob") + "/")


async def test_unreadable_ca_file(manager_for: Any, tls_prosody_server: TlsProsodyServer) -> None:
    missing = tls_prosody_server.data_dir / "no-such.pem"
    manager = manager_for("starttls", ca_file=str(missing))
    with pytest.raises(ConnectionFailed, match=r"ca_file .* cannot be used"):
        await manager.connect("bob")
    not_pem = tls_prosody_server.data_dir / "not.pem"
    not_pem.write_text("not a certificate\n")
    manager = manager_for("starttls", ca_file=str(not_pem))
    with pytest.raises(ConnectionFailed, match=r"ca_file .* cannot be used"):
        await manager.connect("bob")


def test_verification_is_the_default() -> None:
    context = ConnectionOptions.from_dict({}).ssl_context()
    assert context.check_hostname
    assert context.verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verify_certificate": "no"}, "verify_certificate must be a boolean"),
        ({"verify_certificate": 0}, "verify_certificate must be a boolean"),
        ({"ca_file": "relative/ca.pem"}, "ca_file must be the absolute path"),
        ({"ca_file": ""}, "ca_file must be the absolute path"),
        ({"ca_file": 7}, "ca_file must be the absolute path"),
        ({"ca_file": "/etc/ca\n.pem"}, "ca_file must be the absolute path"),
    ],
)
def test_certificate_options_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_options(options)


def test_certificate_options_accepted() -> None:
    options = {"verify_certificate": False, "ca_file": "/etc/ssl/certs/ca.pem"}
    assert check_options(options) == options
