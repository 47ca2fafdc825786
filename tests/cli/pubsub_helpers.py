"""What the pubsub, cache and blog command tests share: profiles of the module's daemon for
test server accounts, and Atom entries to publish."""

from __future__ import annotations

import asyncio
import uuid
from xml.sax.saxutils import escape

from roost.bridge.client import RoostClient
from tests.cli.conftest import RoostCli, RoostResult
from tests.fixtures.xmpp import XmppServer

ATOM = "http://www.w3.org/2005/Atom"
MICROBLOG = "urn:xmpp:microblog:0"
OPEN = {"pubsub#access_model": "open"}
# A microblog node that keeps every post (PEP nodes keep one item by default).
BLOG_NODE_CONFIG = {**OPEN, "pubsub#max_items": "1000"}


def atom_entry(
    n: int,
    *,
    title: str | None = None,
    content: str | None = None,
    content_type: str = "text",
    author: str = "",
    tags: tuple[str, ...] = (),
) -> str:
    """An XEP-0277 post: published at minute ``n`` of 2026-01-01 (UTC)."""
    body = escape(content if content is not None else f"Body of post {n}")
    author_xml = f"<author><name>{escape(author)}</name></author>" if author else ""
    categories = "".join(f"<category term='{escape(tag)}'/>" for tag in tags)
    stamp = f"2026-01-01T{n // 60:02d}:{n % 60:02d}:00Z"
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:post-{n}</id>"
        f"<title>{escape(title or f'Post {n}')}</title>{author_xml}"
        f"<content type='{content_type}'>{body}</content>{categories}"
        f"<published>{stamp}</published><updated>{stamp}</updated></entry>"
    )


def profile_name(user: str) -> str:
    """A profile name of this daemon's own for ``user`` (alice is shared by many tests)."""
    return f"{user.split('-')[0]}-{uuid.uuid4().hex[:12]}"


async def new_profile(
    client: RoostClient, server: XmppServer, user: str, *, connect: bool = True
) -> str:
    """A new profile of the daemon for ``user``'s account (connected unless told not to);
    its name."""
    name = profile_name(user)
    jid, password, options = server.credentials(user)
    await client.create_profile(name, jid, password, options)
    if connect:
        await client.connect_profile(name)
    return name


async def run(roost_cli: RoostCli, *args: str, input: str | None = None) -> RoostResult:
    """``roost ARGS`` off the event loop, so that the test's own clients keep going."""
    return await asyncio.to_thread(roost_cli, *args, input=input)


def one_line_error(result: RoostResult, code: int) -> str:
    """Check that the command failed with ``code`` and one readable line; that line."""
    assert result.code == code, (result.args, result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roost: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
