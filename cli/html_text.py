"""HTML or XHTML markup as the plain text a reader sees (``roost blog``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SPACES = re.compile(r"[ \t\r\f\v]+")


class TextExtractor(HTMLParser):
    """HTML or XHTML markup to plain text: blocks become lines, scripts are dropped."""

    BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "blockquote", "pre", "tr", "table", "hr"}
        | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer"}
        | {"dd", "dt"}
    )
    SKIPPED = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.rsplit(":", 1)[-1].lower()
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("• ")

    def handle_endtag(self, tag: str) -> None:
        tag = tag.rsplit(":", 1)[-1].lower()
        if tag in self.SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = [_SPACES.sub(" ", line).strip() for line in "".join(self.parts).split("\n")]
        # Paragraphs stay apart by one blank line at most.
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip()
