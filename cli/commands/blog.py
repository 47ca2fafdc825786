"""``roost blog``: a person's XEP-0277 microblog, for reading.

Posts come newest first, each as title, author, date and text, read from the parsed data
the daemon gives (the payload's text where there is none, never its XML). Pages follow
the bus's RSM tokens backwards from the newest post.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from roost.cli.items import as_text, local_time, parsed_of, xml_text
from roost.cli.options import json_option, profile_option
from roost.cli.output import console, print_json
from roost.cli.session import CliOptions, run_with_client

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient

MICROBLOG = "urn:xmpp:microblog:0"
QUIT_KEYS = frozenset({"q", "Q", "\x1b"})


@dataclass
class Page:
    """One page of posts, newest first, and the token of the page after it."""

    posts: list[dict[str, Any]]
    count: int | None
    complete: bool
    next_token: str | None
    from_cache: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def post_of(item: dict[str, Any], owner: str) -> dict[str, Any]:
    """A post as a reader (or a script) wants it: plain text, no XML."""
    parsed = parsed_of(item)
    if parsed is None:
        text = "" if item.get("omitted") else xml_text(str(item.get("xml", "")))
        return {
            "id": item.get("id", ""),
            "title": "",
            "author": "",
            "author_jid": owner,
            "published": None,
            "published_ts": None,
            "updated": None,
            "updated_ts": None,
            "content": text,
            "tags": [],
            "publisher": item.get("publisher", ""),
        }
    content = as_text(parsed.get("content"), parsed.get("content_type"))
    if not content:
        content = as_text(parsed.get("summary"), parsed.get("summary_type"))
    tags = parsed.get("tags")
    return {
        "id": item.get("id", ""),
        "title": as_text(parsed.get("title"), parsed.get("title_type")),
        "author": parsed.get("author") or "",
        "author_jid": parsed.get("author_jid") or owner,
        "published": parsed.get("published"),
        "published_ts": parsed.get("published_ts"),
        "updated": parsed.get("updated"),
        "updated_ts": parsed.get("updated_ts"),
        "content": content,
        "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
        "publisher": item.get("publisher", ""),
    }


async def read_page(client: RoostClient, profile: str, service: str, size: int, token: str) -> Page:
    """The page of ``size`` posts just older than ``token`` (``""``: the newest)."""
    items, metadata = await client.get_items(
        profile, service, MICROBLOG, max_items=size, before=token
    )
    owner = service
    posts = [post_of(item, owner) for item in reversed(items)]
    complete = bool(metadata.get("complete", True))
    next_token = None if complete or not items else metadata.get("rsm_first")
    count = metadata.get("rsm_count")
    return Page(
        posts,
        None if count is None else int(count),
        complete or next_token is None,
        next_token,
        bool(metadata.get("from_cache")),
        metadata,
    )


def render_post(post: dict[str, Any]) -> None:
    """One post: title, author and date, then its text."""
    from rich.padding import Padding
    from rich.rule import Rule
    from rich.text import Text

    out = console()
    out.print(Rule(style="dim"))
    out.print(Text(post["title"] or "(untitled)", style="bold"))
    author = post["author"]
    jid = post["author_jid"] or post["publisher"].split("/")[0]
    parts = [f"{author} <{jid}>" if author and jid and author != jid else author or jid]
    when = local_time(post["published_ts"]) or local_time(post["updated_ts"])
    parts.append(when or post["published"] or post["updated"] or "")
    if post["tags"]:
        parts.append(" ".join(f"#{tag}" for tag in post["tags"]))
    byline = " · ".join(part for part in parts if part)
    if byline:
        out.print(Text(byline, style="dim"))
    if post["content"]:
        out.print(Padding(Text(post["content"]), (1, 0, 0, 2), expand=False))
    out.print()


def render_page(page: Page, first: int | None) -> None:
    """Every post of the page, and where it stands in the blog (``first``: how many newer
    posts came before it, None when unknown)."""
    from rich.text import Text

    for post in page.posts:
        render_post(post)
    if not page.posts:
        shown = "no posts"
    elif first is None:
        shown = f"{len(page.posts)} older post(s)"
    else:
        shown = f"posts {first + 1}-{first + len(page.posts)}"
    total = f" of {page.count}" if page.count is not None and page.posts else ""
    console().print(Text(f"{shown}{total}", style="dim"))


def wait_for_key() -> bool:
    """Ask for the next page on the terminal; False when the reader quits."""
    prompt = "-- any key: older posts, q: quit --"
    click.echo(click.style(prompt, dim=True), nl=False)
    try:
        key = click.getchar()
    except EOFError:
        key = "q"
    # Erase the prompt: the next page takes its line.
    click.echo("\r" + " " * len(prompt) + "\r", nl=False)
    return key not in QUIT_KEYS


@click.command()
@click.argument("jid", required=False, default="")
@profile_option
@click.option(
    "--max",
    "size",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Posts per page.",
)
@click.option("--more", "token", metavar="TOKEN", help="Continue with the page after this one.")
@click.option("--no-pager", is_flag=True, help="Print one page, even on a terminal.")
@json_option
@click.pass_obj
def blog(
    options: CliOptions,
    jid: str,
    profile: str,
    size: int,
    token: str | None,
    no_pager: bool,
    as_json: bool,
) -> None:
    """Read JID's microblog (XEP-0277), newest first; your own without JID.

    On a terminal, a key shows the next (older) page and q quits; otherwise one page is
    printed with the --more TOKEN that continues it.
    """
    service = "" if jid in ("", "-") else jid
    interactive = not as_json and not no_pager and sys.stdout.isatty() and sys.stdin.isatty()

    async def body(client: RoostClient) -> None:
        page = await read_page(client, profile, service, size, token or "")
        if as_json:
            print_json(
                {
                    "jid": service,
                    "node": MICROBLOG,
                    "posts": page.posts,
                    "count": page.count,
                    "complete": page.complete,
                    "next": page.next_token,
                    "from_cache": page.from_cache,
                }
            )
            return
        first: int | None = None if token else 0
        while True:
            render_page(page, first)
            if page.next_token is None:
                if first or page.posts:
                    click.echo(click.style("(the end of the blog)", dim=True))
                return
            if not interactive:
                again = ["roost", "blog", *([jid] if service else [])]
                if profile:
                    again += ["-p", shlex.quote(profile)]
                if size != 10:
                    again += ["--max", str(size)]
                click.echo(f"more: {' '.join(again)} --more {page.next_token}")
                return
            if not wait_for_key():
                return
            if first is not None:
                first += len(page.posts)
            page = await read_page(client, profile, service, size, page.next_token)

    run_with_client(options, body)
