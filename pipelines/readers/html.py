"""HTML through trafilatura (Apache-2.0), a maintained main-text extractor:
navigation, menus, sidebars, footers, scripts and styles are dropped, the
headings of the main text become sections.

trafilatura keeps headings only inside a main container (`<article>`,
`<main>`); a page without one (a Gutenberg HTML book, a plain document) is
given one around its body, so its chapter headings survive. A page too small
for trafilatura's thresholds is read by the same walker as EPUB chapters.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.readers.common import MAX_HTML_BYTES, Extracted, Heading, ReaderError, clean_inline, join_blocks, package_version
from pipelines.readers.gutenberg import strip_gutenberg

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
# trafilatura's time grows faster than linearly with the page (measured here: 2 MB in 3.4 s,
# 21 MB in 261 s); bigger pages (whole books) are read by the linear walker instead.
MAX_TRAFILATURA_BYTES = 4 * 1024 * 1024
_BOILERPLATE_TAGS = ("nav", "header", "footer", "aside", "script", "style", "noscript", "form", "template")


def read_html(path: Path) -> Extracted:
    size = path.stat().st_size
    if size > MAX_HTML_BYTES:
        raise ReaderError(
            f"{path}: the HTML file is {size / 2**20:.0f} MiB; longsum reads HTML up to "
            f"{MAX_HTML_BYTES // 2**20} MiB (save the article's text, or split the page)"
        )
    markup = decode_html(path.read_bytes())
    sample = markup[:65536]
    if sample and sum(1 for ch in sample if ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f")) > 0.01 * len(sample):
        raise ReaderError(f"{path}: not HTML: binary data (NUL and control bytes, or bytes of no encoding)")
    markup = _CONTROL.sub("", markup)  # lxml refuses the odd control character a real page may carry
    import lxml.html

    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, recover=True,
                                  huge_tree=True)
    try:
        tree = lxml.html.document_fromstring(markup, parser=parser)
    except Exception:  # noqa: BLE001 - lxml raises several types for markup it cannot use
        tree = None
    if tree is None:
        raise ReaderError(f"{path}: not readable HTML")
    _drop_permalinks(tree)
    title = _title(tree)
    blocks: list[tuple[str, str, int]] = []
    metadata: dict = {}
    if size <= MAX_TRAFILATURA_BYTES:
        blocks = _trafilatura_blocks(tree)
        if not any(kind == "text" for kind, _, _ in blocks):
            # trafilatura may have pruned the tree in place: read the markup afresh
            tree = lxml.html.document_fromstring(markup, parser=parser)
            _drop_permalinks(tree)
    else:
        metadata["note"] = (f"over {MAX_TRAFILATURA_BYTES // 2**20} MiB: read without trafilatura "
                            "(its time grows faster than the page), navigation and scripts dropped by tag")
    del markup
    extractor = "trafilatura"
    if not any(kind == "text" for kind, _, _ in blocks):
        blocks = _walker_blocks(tree)
        extractor = "lxml"
    del tree
    text, headings = join_blocks(blocks)
    text, cut = strip_gutenberg(text)
    if cut:
        metadata["gutenberg"] = {k: v for k, v in cut.items() if k not in ("start_offset", "end_offset")}
        shift = cut["start_offset"]
        headings = [Heading(h.title, h.start - shift, h.level, h.kind) for h in headings
                    if 0 <= h.start - shift < len(text) - 1]
    if not text.strip():
        raise ReaderError(f"{path}: the HTML page has no main text")
    version = package_version("trafilatura") if extractor == "trafilatura" else package_version("lxml")
    return Extracted(
        text=text, format="html", extractor=extractor, extractor_version=version,
        headings=headings, title=title, pages=None, metadata=metadata,
    )


def decode_html(raw: bytes) -> str:
    """UTF-8 (with or without BOM), else the charset the page declares, else cp1252."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _XML_DECLARATION.sub("", raw.decode("utf-16"), count=1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        match = _META_CHARSET.search(raw[:4096])
        encoding = match.group(1).decode("ascii", "replace") if match else "cp1252"
        try:
            text = raw.decode(encoding, errors="replace")
        except LookupError:
            text = raw.decode("cp1252", errors="replace")
    # lxml refuses a str that still declares its encoding
    return _XML_DECLARATION.sub("", text, count=1)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# What documentation generators put after a heading to link to it: Sphinx's ¶, MkDocs' and
# GitHub's #, and the like.
_PERMALINK_TEXT = {"\u00b6", "#", "\u00a7", "\U0001f517", "\u2693", "\u2042", ""}
_PERMALINK_CLASS = re.compile(r"\b(?:headerlink|header-link|anchor(?:-link|js-link)?|permalink|heading-anchor)\b", re.I)
_TITLE_SEPARATOR = re.compile(r"\s+(?:[|\u2014\u2013\u00b7\u2022\u00bb:]{1,2}|-{1,2})\s+")


def _drop_permalinks(tree) -> None:
    """Links a page puts beside its headings to point at them (`<a class="headerlink"
    href="#intro">¶</a>`): marks, not text."""
    for link in list(tree.iter("a")):
        href = (link.get("href") or "").strip()
        text = "".join(link.itertext()).strip()
        marked = _PERMALINK_CLASS.search(link.get("class") or "")
        if (marked and len(text) <= 2) or (href.startswith("#") and text in _PERMALINK_TEXT and len(href) > 1):
            link.drop_tree()  # its tail stays


def _title(tree) -> str | None:
    for xpath in ("//meta[@property='og:title']/@content", "//title//text()", "//h1//text()"):
        found = [t.strip() for t in tree.xpath(xpath) if t and t.strip()]
        if found:
            return _without_site(" ".join(" ".join(found).split())[:300], tree)
    return None


def _without_site(title: str, tree) -> str:
    """The page's own title without the site's name ("Data model — Python 3.12
    documentation", "Story | Example Press"): the part the page's heading
    repeats, else all but a part that names the site, else all but a short
    last part after a separator."""
    parts = [p.strip() for p in _TITLE_SEPARATOR.split(title) if p.strip()]
    if len(parts) < 2:
        return title
    key = lambda t: " ".join(t.split()).casefold()  # noqa: E731
    headings = {key("".join(h.itertext())) for h in tree.iter("h1")}
    for part in parts:
        if key(part) in headings:
            return part
    sites = {key(v) for v in tree.xpath("//meta[@property='og:site_name' or @name='application-name']/@content")}
    if sites:
        kept = [p for p in parts if key(p) not in sites]
        if kept and len(kept) < len(parts):
            return _TITLE_SEPARATOR.search(title).group(0).join(kept) if len(kept) > 1 else kept[0]
    if len(parts[-1].split()) <= 5:
        match = list(_TITLE_SEPARATOR.finditer(title))[-1]
        return title[:match.start()].strip()
    return title


def _trafilatura_blocks(tree) -> list[tuple[str, str, int]]:
    import lxml.etree as etree
    import trafilatura

    if not tree.xpath("//article|//main|//*[@role='main']"):
        body = tree.find("body")
        if body is not None:
            # inside the wrapper trafilatura would take page chrome for content: it goes first
            for element in [el for el in body.iter(*_BOILERPLATE_TAGS) if el.getparent() is not None]:
                element.drop_tree()
            article = etree.SubElement(body, "article")
            for child in list(body):
                if child is not article:
                    article.append(child)
            body.text, article.text = None, body.text
    result = trafilatura.extract(
        tree, output_format="xml", include_comments=False, include_tables=True, include_images=False,
        include_links=False, favor_recall=True, deduplicate=False, with_metadata=False,
    )
    if not result:
        return []
    root = etree.fromstring(result.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, huge_tree=True))
    main = root.find("main")
    blocks: list[tuple[str, str, int]] = []
    _collect(main if main is not None else root, blocks)
    return blocks


def _inline(element) -> str:
    parts = []

    def visit(el):
        if el.tag == "lb":
            parts.append("\n")
        elif el.text:
            parts.append(el.text)
        for child in el:
            visit(child)
            if child.tail:
                parts.append(child.tail)

    visit(element)
    lines = [" ".join(clean_inline(line).split()) for line in "".join(parts).split("\n")]
    return "\n".join(line for line in lines if line)


def _collect(element, blocks: list) -> None:
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag == "head":
            match = re.search(r"\d", child.get("rend") or "")
            blocks.append(("heading", _inline(child), int(match.group()) if match else 2))
        elif tag == "list":
            for item in child:
                if item.tag == "item":
                    blocks.append(("text", _inline(item), 0))
        elif tag == "table":
            for row in child.iter("row"):
                cells = [_inline(cell) for cell in row if cell.tag == "cell"]
                if any(cells):
                    blocks.append(("text", " | ".join(cells), 0))
        elif tag in ("div", "main", "doc"):
            _collect(child, blocks)
        elif tag == "code":
            blocks.append(("text", "".join(child.itertext()).strip("\n"), 0))
        else:  # p, quote, and anything trafilatura adds later
            blocks.append(("text", _inline(child), 0))


def _walker_blocks(tree) -> list[tuple[str, str, int]]:
    from pipelines.readers.markup import tree_blocks

    for element in [el for el in tree.iter(*_BOILERPLATE_TAGS) if el.getparent() is not None]:
        element.drop_tree()
    page = tree_blocks(tree)
    return [(b.kind, b.text, b.level) for b in page.blocks]
