"""The XEP-0277 microblog parser, on entries as a pubsub service delivers them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.service.cache.microblog import (
    ATOM_NS,
    parse_microblog_entry,
    parse_timestamp,
    parse_xmpp_uri,
)
from roost.service.safe_xml import parse_xml

PUBSUB_NS = "http://jabber.org/protocol/pubsub"

POST = """<item xmlns="http://jabber.org/protocol/pubsub" id="post-1">
  <entry xmlns="http://www.w3.org/2005/Atom" xmlns:thr="http://purl.org/syndication/thread/1.0"
         xml:base="https://blog.example.org/juliet/">
    <id>tag:example.org,2026:posts-1</id>
    <title type="text">Balcony notes</title>
    <summary type="html">&lt;p&gt;A &lt;em&gt;short&lt;/em&gt; one&lt;/p&gt;</summary>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Wherefore art
      <a href="https://example.org/r">thou</a> &amp; &lt;why&gt;?</p><br/></div></content>
    <published>2026-11-25T12:00:00Z</published>
    <updated>2026-11-25T13:30:00.250+01:00</updated>
    <author>
      <name>Juliet Capulet</name>
      <email>juliet@example.org</email>
      <uri>xmpp:juliet@example.org</uri>
    </author>
    <author><name>Nurse</name><uri>https://nurse.example.org/</uri></author>
    <category term="verona" label="Verona" scheme="https://example.org/places"/>
    <category term="love"/>
    <category label="no term"/>
    <link rel="alternate" type="text/html" href="posts/1.html" title="Read it"/>
    <link href="/about" hreflang="en" length="42"/>
    <link rel="replies" title="comments"
          href="xmpp:pubsub.example.org?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments%2Fpost-1"/>
    <link rel="replies" type="application/atom+xml" href="https://example.org/c.atom"
          thr:count="3"/>
    <thr:in-reply-to ref="tag:example.org,2026:posts-0"
        href="xmpp:romeo@example.net?;node=urn%3Axmpp%3Amicroblog%3A0;item=post-0"/>
    <geoloc xmlns="http://jabber.org/protocol/geoloc">
      <lat>45.44</lat><lon>10.99</lon><locality>Verona</locality><alt>nan</alt>
    </geoloc>
  </entry>
</item>"""


def entry_of(item_xml: str) -> ET.Element:
    """The payload of a pubsub item, parsed as the cache parses stored XML."""
    item = parse_xml(item_xml, what="item")
    assert item.tag == f"{{{PUBSUB_NS}}}item"
    return item[0]


@pytest.fixture
def post() -> dict[str, object]:
    return parse_microblog_entry(entry_of(POST))


def test_text_fields_and_types(post: dict[str, object]) -> None:
    assert post["id"] == "tag:example.org,2026:posts-1"
    assert post["title"] == "Balcony notes"
    assert post["title_type"] == "text"
    # html: the markup as text, the XML escaping undone once.
    assert post["summary"] == "<p>A <em>short</em> one</p>"
    assert post["summary_type"] == "html"


def test_xhtml_content_is_kept_as_markup_without_prefixes(post: dict[str, object]) -> None:
    assert post["content_type"] == "xhtml"
    assert post["content"] == (
        '<p>Wherefore art\n      <a href="https://example.org/r">thou</a> &amp; &lt;why&gt;?'
        "</p><br />"
    )
    assert post["content_src"] is None


def test_dates_are_kept_and_normalised(post: dict[str, object]) -> None:
    assert post["published"] == "2026-11-25T12:00:00Z"
    assert post["published_ts"] == datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()
    assert post["updated"] == "2026-11-25T13:30:00.250+01:00"
    assert post["updated_ts"] == datetime(2026, 11, 25, 12, 30, tzinfo=UTC).timestamp() + 0.25


def test_authors_with_jid_from_xmpp_uri(post: dict[str, object]) -> None:
    assert post["authors"] == [
        {
            "name": "Juliet Capulet",
            "email": "juliet@example.org",
            "uri": "xmpp:juliet@example.org",
            "jid": "juliet@example.org",
        },
        {"name": "Nurse", "email": None, "uri": "https://nurse.example.org/", "jid": None},
    ]
    assert post["author"] == "Juliet Capulet"
    assert post["author_jid"] == "juliet@example.org"


def test_categories_and_tags(post: dict[str, object]) -> None:
    assert post["categories"] == [
        {"term": "verona", "scheme": "https://example.org/places", "label": "Verona"},
        {"term": "love", "scheme": None, "label": None},
        {"term": None, "scheme": None, "label": "no term"},
    ]
    assert post["tags"] == ["verona", "love"]


def test_links_resolved_against_xml_base(post: dict[str, object]) -> None:
    links = post["links"]
    assert isinstance(links, list)
    assert links[0] == {
        "rel": "alternate",
        "href": "https://blog.example.org/juliet/posts/1.html",
        "type": "text/html",
        "title": "Read it",
        "hreflang": None,
        "length": None,
    }
    # No rel means alternate (RFC 4287 4.2.7.2); an absolute path keeps the host.
    assert links[1]["rel"] == "alternate"
    assert links[1]["href"] == "https://blog.example.org/about"
    assert links[1]["hreflang"] == "en"
    assert links[1]["length"] == "42"
    # xmpp: URIs are absolute and stay as given.
    assert links[2]["href"].startswith("xmpp:pubsub.example.org?;node=")


def test_comments_replies_and_in_reply_to(post: dict[str, object]) -> None:
    assert post["comments"] == [
        {
            "uri": "xmpp:pubsub.example.org?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments%2Fpost-1",
            "service": "pubsub.example.org",
            "node": "urn:xmpp:microblog:0:comments/post-1",
        }
    ]
    assert post["replies"] == [
        {"href": "https://example.org/c.atom", "type": "application/atom+xml", "count": 3}
    ]
    assert post["in_reply_to"] == [
        {
            "ref": "tag:example.org,2026:posts-0",
            "href": "xmpp:romeo@example.net?;node=urn%3Axmpp%3Amicroblog%3A0;item=post-0",
            "type": None,
            "service": "romeo@example.net",
            "node": "urn:xmpp:microblog:0",
            "item": "post-0",
        }
    ]


def test_geoloc_numbers_and_text(post: dict[str, object]) -> None:
    # "nan" is not JSON: a number field that is not a finite number stays text.
    assert post["geoloc"] == {"lat": 45.44, "lon": 10.99, "locality": "Verona", "alt": "nan"}


def test_result_is_strict_json(post: dict[str, object]) -> None:
    assert json.loads(json.dumps(post, allow_nan=False)) == post


def test_minimal_entry_has_every_key_empty() -> None:
    parsed = parse_microblog_entry(
        entry_of(f'<item xmlns="{PUBSUB_NS}"><entry xmlns="{ATOM_NS}"/></item>')
    )
    assert parsed["title"] is None and parsed["content"] is None
    assert parsed["published_ts"] is None
    assert parsed["authors"] == [] and parsed["author"] is None and parsed["author_jid"] is None
    assert parsed["tags"] == [] and parsed["links"] == [] and parsed["comments"] == []
    assert "geoloc" not in parsed


def test_base_argument_and_nested_xml_base() -> None:
    entry = ET.fromstring(
        f'<entry xmlns="{ATOM_NS}" xml:base="sub/">'
        '<link href="a.html"/><link xml:base="/other/" href="b.html"/>'
        '<content src="movie.mp4" type="video/mp4"/>'
        "<author><uri>me</uri></author></entry>"
    )
    parsed = parse_microblog_entry(entry, base="https://example.org/base/")
    assert [link["href"] for link in parsed["links"]] == [
        "https://example.org/base/sub/a.html",
        "https://example.org/other/b.html",
    ]
    assert parsed["content_src"] == "https://example.org/base/sub/movie.mp4"
    assert parsed["content_type"] == "video/mp4"
    assert parsed["content"] is None
    assert parsed["authors"][0]["uri"] == "https://example.org/base/sub/me"
    # Without any base, a relative reference is kept as written.
    assert parse_microblog_entry(entry)["links"][0]["href"] == "sub/a.html"


def test_broken_base_and_counts_do_not_raise() -> None:
    entry = ET.fromstring(
        f'<entry xmlns="{ATOM_NS}" xmlns:thr="http://purl.org/syndication/thread/1.0"'
        ' xml:base="sub/"><link rel="replies" href="c" thr:count="²"/>'
        '<link rel="replies" href="d" thr:count=" 7 "/></entry>'
    )
    parsed = parse_microblog_entry(entry, base="http://[broken/")
    # The malformed outer base cannot be joined; the entry's own base still applies.
    assert [r["href"] for r in parsed["replies"]] == ["sub/c", "sub/d"]
    assert [r["count"] for r in parsed["replies"]] == [None, 7]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-25T12:58:44Z", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25t12:58:44z", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25 12:58:44Z", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25T13:58:44+01:00", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25T13:58:44+0100", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25T12:58:44", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("  2026-11-25T12:58:44Z\n", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("Wed, 25 Nov 2026 12:58:44 +0000", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
        ("Wed, 25 Nov 2026 13:58:44 +0100", datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC)),
    ],
)
def test_accepted_date_forms(stamp: str, expected: datetime) -> None:
    assert parse_timestamp(stamp) == expected.timestamp()


def test_fractional_seconds() -> None:
    base = datetime(2026, 11, 25, 12, 58, 44, tzinfo=UTC).timestamp()
    assert parse_timestamp("2026-11-25T12:58:44.5Z") == base + 0.5


@pytest.mark.parametrize("stamp", ["", "yesterday", "2026-13-45T99:00:00Z", "25/11/2026"])
def test_unreadable_dates_give_none(stamp: str) -> None:
    assert parse_timestamp(stamp) is None


def test_unreadable_date_is_kept_as_given() -> None:
    entry = ET.fromstring(f'<entry xmlns="{ATOM_NS}"><updated>last week</updated></entry>')
    parsed = parse_microblog_entry(entry)
    assert parsed["updated"] == "last week"
    assert parsed["updated_ts"] is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("xmpp:romeo@example.net", {"jid": "romeo@example.net", "action": None}),
        ("XMPP:romeo@example.net?message", {"jid": "romeo@example.net", "action": "message"}),
        ("xmpp://me@example.org/romeo@example.net", {"jid": "romeo@example.net", "action": None}),
        ("xmpp:caf%C3%A9@example.net#frag", {"jid": "café@example.net", "action": None}),
    ],
)
def test_xmpp_uris(uri: str, expected: dict[str, str | None]) -> None:
    parsed = parse_xmpp_uri(uri)
    assert parsed is not None
    assert {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize("uri", [None, "", "https://example.org/", "xmpp:", "xmpp:?;node=x"])
def test_not_xmpp_uris(uri: str | None) -> None:
    assert parse_xmpp_uri(uri) is None


def test_html_content_and_text_content() -> None:
    entry = ET.fromstring(
        f'<entry xmlns="{ATOM_NS}"><title type="html">Q&amp;amp;A &lt;b&gt;now&lt;/b&gt;</title>'
        '<content type="text/plain">  plain  </content></entry>'
    )
    parsed = parse_microblog_entry(entry)
    assert parsed["title"] == "Q&amp;A <b>now</b>"
    assert parsed["content"] == "plain"
    assert parsed["content_type"] == "text/plain"


def test_base64_content_decoded_only_when_text() -> None:
    entry = ET.fromstring(
        f'<entry xmlns="{ATOM_NS}"><summary type="application/octet-stream">aGVsbG8=</summary>'
        '<content type="image/png">/w==</content></entry>'
    )
    parsed = parse_microblog_entry(entry)
    assert parsed["summary"] == "hello"
    # 0xFF is not UTF-8: the base64 text is kept rather than guessed at.
    assert parsed["content"] == "/w=="
    assert parsed["content_type"] == "image/png"


def test_inline_xml_content_is_serialised() -> None:
    entry = ET.fromstring(
        f'<entry xmlns="{ATOM_NS}"><content type="application/xml">'
        '<note xmlns="urn:example">hi</note></content></entry>'
    )
    content = parse_microblog_entry(entry)["content"]
    assert ET.fromstring(content).tag == "{urn:example}note"


def test_entry_without_namespace_is_read_as_atom() -> None:
    parsed = parse_microblog_entry(ET.fromstring("<entry><id>right</id><title>T</title></entry>"))
    assert parsed["id"] == "right"
    assert parsed["title"] == "T"


@pytest.mark.parametrize(
    ("xml", "why"),
    [
        (f'<item xmlns="{PUBSUB_NS}"/>', "not an Atom entry"),
        ('<entry xmlns="http://www.w3.org/2005/Atom/"/>', "not an Atom entry"),
        ('<feed xmlns="http://www.w3.org/2005/Atom"/>', "not an Atom entry"),
        ('<event xmlns="urn:xmpp:events:0"/>', "not an Atom entry"),
    ],
)
def test_not_an_entry_raises_value_error(xml: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_microblog_entry(ET.fromstring(xml))


ATOM_CHILDREN = [
    "id", "title", "summary", "content", "published", "updated", "author", "contributor",
    "category", "link", "name", "uri", "email", "div", "source",
]  # fmt: skip
NAMESPACES = [
    ATOM_NS,
    "http://www.w3.org/1999/xhtml",
    "http://purl.org/syndication/thread/1.0",
    "http://jabber.org/protocol/geoloc",
    "",
]
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
ATTRIBUTES = [
    "type", "href", "rel", "title", "term", "src", "ref", "length", XML_BASE,
    "{http://purl.org/syndication/thread/1.0}count",
]  # fmt: skip
TYPES = ["text", "html", "xhtml", "", "TEXT", "image/png", "application/xml", "text/x"]
# Values that trip URI and number handling: a broken IPv6 host, digits int() refuses.
odd_values = st.sampled_from(
    ["http://[x/", "//[::1", "²", " 7 ", "-3", "xmpp:?", "replies", "comments"]
)
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    namespace = draw(st.sampled_from(NAMESPACES))
    local = draw(st.sampled_from([*ATOM_CHILDREN, "in-reply-to", "geoloc", "lat"]))
    if local == "link" and draw(st.booleans()):
        namespace = ATOM_NS
    element = ET.Element(f"{{{namespace}}}{local}" if namespace else local)
    for name in draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=3, unique=True)):
        pick = st.sampled_from(TYPES) if name == "type" else st.one_of(texts, odd_values)
        element.set(name, draw(pick))
    element.text = draw(st.one_of(st.none(), texts, st.just("aGVsbG8="), st.just("/w==")))
    if depth < 2:
        element.extend(draw(st.lists(elements(depth + 1), max_size=3)))
    element.tail = draw(st.one_of(st.none(), texts))
    return element


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    children=st.lists(elements(), max_size=8),
    base=st.one_of(st.none(), texts, odd_values),
    entry_base=st.one_of(st.none(), texts, odd_values),
)
def test_odd_but_well_formed_entries_never_raise(
    children: list[ET.Element], base: str | None, entry_base: str | None
) -> None:
    entry = ET.Element(f"{{{ATOM_NS}}}entry")
    if entry_base is not None:
        entry.set(XML_BASE, entry_base)
    entry.extend(children)
    # Round-trip through the serialiser, as a stored item would be.
    reparsed = ET.fromstring(ET.tostring(entry, encoding="unicode"))
    parsed = parse_microblog_entry(reparsed, base=base)
    json.dumps(parsed, allow_nan=False)
    assert set(parsed) >= {"id", "title", "content", "authors", "links", "tags"}
