"""(X)HTML to paragraphs, for EPUB chapters: block elements become
paragraphs, headings are marked, `<br>` is a line break, scripts, styles and
navigation are dropped, and every element id is remembered so that a table
of contents entry (`chapter3.xhtml#c3`) can be found in the text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipelines.readers.common import clean_inline

BLOCKS = {
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "ol", "p", "pre", "section", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "center", "html",
}
SKIP = {"script", "style", "noscript", "template", "head", "title", "svg", "math", "iframe", "object", "button",
        "select", "nav", "form", "input", "textarea", "audio", "video", "canvas", "map"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Gutenberg's newer EPUBs wrap their boilerplate in these
_BOILERPLATE = re.compile(r"\bpg-boilerplate\b|\bpg-(?:header|footer)\b")


@dataclass
class Block:
    kind: str  # text | heading
    text: str
    level: int = 0
    links: int = 0  # characters inside internal links (a contents list is nearly all links)


@dataclass
class Page:
    blocks: list[Block] = field(default_factory=list)
    anchors: dict[str, int] = field(default_factory=dict)  # element id -> index of the block it opens
    boilerplate: list[str] = field(default_factory=list)  # text of Gutenberg's marked boilerplate, left out


def parse_html(data: bytes):
    """lxml's forgiving HTML parser (XHTML that is not well-formed XML is common in EPUBs)."""
    import lxml.html

    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, recover=True,
                                  huge_tree=False)
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except Exception:  # noqa: BLE001 - an empty or unparsable chapter reads as no text
        return None


def html_blocks(data: bytes) -> Page:
    return tree_blocks(parse_html(data))


def tree_blocks(root) -> Page:
    page = Page()
    if root is None:
        return page
    walker = _Walker(page)
    body = root.find("body")
    walker.walk(body if body is not None else root)
    walker.flush()
    return page


class _Walker:
    def __init__(self, page: Page):
        self.page = page
        self.parts: list[str] = []
        self.links = 0
        self.heading: int = 0
        self.pre = 0

    def flush(self) -> None:
        raw = "".join(self.parts)
        self.parts = []
        links, self.links = self.links, 0
        if self.pre:
            text = raw.strip("\n")
        else:
            lines = [" ".join(clean_inline(line).split()) for line in raw.split("\n")]
            text = "\n".join(line for line in lines if line)
        if text.strip():
            kind = "heading" if self.heading else "text"
            self.page.blocks.append(Block(kind=kind, text=text, level=self.heading, links=links))

    def walk(self, element, depth: int = 0) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        tag = tag.rsplit("}", 1)[-1].lower()
        if tag in SKIP or not tag or depth > 200:
            return
        if _BOILERPLATE.search(element.get("class") or "") or _BOILERPLATE.search(element.get("id") or ""):
            self.page.boilerplate.append(" ".join("".join(element.itertext()).split()))
            return
        for key in ("id", "name"):
            value = element.get(key)
            if value and value not in self.page.anchors:
                self.page.anchors[value] = len(self.page.blocks)
        block = tag in BLOCKS
        if block:
            self.flush()
        level = HEADINGS.get(tag)
        if level:
            self.heading = level
        if tag == "pre":
            self.pre += 1
        if tag == "br":
            self.parts.append("\n")
        internal_link = tag == "a" and (element.get("href") or "").split(":", 1)[0] not in ("http", "https", "mailto")
        start = sum(len(p) for p in self.parts) if internal_link and element.get("href") else None
        if element.text:
            self.parts.append(element.text)
        for child in element:
            self.walk(child, depth + 1)
            if child.tail:
                self.parts.append(child.tail)
        if start is not None:
            self.links += len("".join(self.parts)) - start
        if tag == "pre":
            self.pre -= 1
        if block:
            self.flush()
        if level:
            self.heading = 0
