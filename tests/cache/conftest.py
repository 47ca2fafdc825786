"""The cache tests run on the XMPP tests' session fixtures."""

from tests.xmpp.conftest import hub, recorder, sessions

__all__ = ["hub", "recorder", "sessions"]
