"""What the full-text index covers for an item, with and without parsed data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from roost.service.cache.microblog import parse_microblog_entry
from roost.service.cache.search_text import search_text_for
from roost.service.safe_xml import parse_xml

ITEM = """<item xmlns="http://jabber.org/protocol/pubsub" id="p1">
  <entry xmlns="http://www.w3.org/2005/Atom">
    <id>tag:example.org,2026:p1</id>
    <title>Balcony notes</title>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Wherefore
      <a href="https://example.org/romeo">art</a> thou</p><p>Romeo&#160;&amp;co</p></div></content>
    <author><name>Juliet</name><uri>xmpp:juliet@example.org</uri></author>
    <category term="verona"/>
    <link rel="alternate" href="https://blog.example.org/p1"/>
    <published>2026-11-25T12:00:00Z</published>
  </entry>
</item>"""


def test_parsed_strings_without_keys_urls_or_markup() -> None:
    item = parse_xml(ITEM)
    text = search_text_for(parse_microblog_entry(item[0]), item[0])
    words = text.split()
    assert "Balcony" in words and "Juliet" in words and "verona" in words
    # The XHTML's text, split where the markup separates words and joined where it does not.
    assert "Wherefore art thou" in text
    assert "Romeo &co" in text
    # No keys, no tag or attribute names, no URIs.
    for absent in ("title", "content", "href", "<p>", "https://", "xmpp:", "tag:"):
        assert absent not in text, absent
    # Nor values that describe others (types, rels) or dates.
    for absent in ("xhtml", "text", "alternate", "2026"):
        assert absent not in words, absent
    # Repeated strings (author and authors[0].name, the tag and the category) once.
    assert words.count("Juliet") == 1
    assert words.count("verona") == 1


def test_payload_text_content_when_no_parsed_data() -> None:
    payload = ET.fromstring(
        '<event xmlns="urn:example:event" start="2026-12-01">'
        '<summary lang="en">Masked  ball</summary><where><place>Capulet\nhouse</place></where>'
        "tail text</event>"
    )
    text = search_text_for(None, payload)
    assert text == "Masked ball\nCapulet house\ntail text"
    for absent in ("event", "summary", "lang", "start", "2026-12-01", "place"):
        assert absent not in text


def test_parsed_data_wins_over_payload() -> None:
    payload = ET.fromstring("<x>payload words</x>")
    assert search_text_for({"label": "parsed words"}, payload) == "parsed words"


def test_other_parsers_data() -> None:
    parsed = {
        "name": "Masked ball",
        "count": 3,
        "cancelled": False,
        "nested": [{"note": "bring a mask"}, ["deep", None]],
        "body": "<b>bold</b> claim",
        "body_type": "html",
        "raw": "<b>kept</b>",  # no raw_type: not known to be markup, kept as written
        "site": "HTTPS://example.org/ball",
        "time": "12:30",
        "when": "2026-12-01T20:00:00+01:00",
        "type": "party",
    }
    text = search_text_for(parsed, None)
    assert text.split("\n") == [
        "Masked ball",
        "bring a mask",
        "deep",
        "bold claim",
        "<b>kept</b>",
        "12:30",
    ]


def test_nothing_to_index() -> None:
    assert search_text_for(None, None) == ""
    assert search_text_for({}, ET.fromstring("<x>ignored</x>")) == ""
    assert search_text_for({"a": "  ", "b": [None, 1.5]}, None) == ""
    assert search_text_for(None, ET.fromstring("<x a='attr'/>")) == ""
