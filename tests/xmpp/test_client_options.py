"""Connection options of a profile, as the client reads them."""

from __future__ import annotations

import pytest

from roost.service.errors import InvalidArgument
from roost.service.xmpp.client import ConnectionOptions, RoostClient


def test_defaults_and_values() -> None:
    assert ConnectionOptions.from_dict({}) == ConnectionOptions("", 0, "starttls", False)
    options = ConnectionOptions.from_dict(
        {"host": "127.0.0.1", "port": 5333, "tls": "none", "autoconnect": True}
    )
    assert options == ConnectionOptions("127.0.0.1", 5333, "none", True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "port"),
        ({"port": "5222"}, "port"),
        ({"port": True}, "port"),
        ({"tls": "maybe"}, "tls option must be one of required, starttls, none"),
        ({"host": 3}, "host"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ConnectionOptions.from_dict(options)


async def test_plain_auth_only_without_tls() -> None:
    # Inside a running loop: slixmpp would otherwise make (and leak) one of its own.
    clear = RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))
    mechanisms = clear.plugin["feature_mechanisms"]
    assert mechanisms.unencrypted_plain and mechanisms.unencrypted_scram
    assert clear.enable_plaintext and not clear.enable_starttls
    for mode in ("starttls", "required"):
        client = RoostClient("a@example.org", "pw", ConnectionOptions(tls=mode))
        assert not client.plugin["feature_mechanisms"].unencrypted_plain
        assert not client.enable_plaintext
    direct = RoostClient("a@example.org", "pw", ConnectionOptions(host="h", tls="required"))
    assert direct.server_address() == ("h", 5223)
    assert RoostClient("a@example.org", "pw", ConnectionOptions()).server_address() is None
