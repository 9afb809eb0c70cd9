"""EPUB with the standard library's zipfile and lxml (EbookLib is AGPL).

An EPUB is a zip of XHTML files. `META-INF/container.xml` names the package
(.opf) file; its spine is the reading order and its table of contents (the
EPUB 3 navigation document, or the EPUB 2 `toc.ncx`) names the chapters.
Spine items are read in order, front matter (cover, contents pages and
contents lists, copyright pages, items marked non-linear) is dropped,
Gutenberg's header and licence are cut, and each table of contents entry
becomes a section at the place its link points to.

Every member is read with a cap on its decompressed size, and all of them
together with another, so a zip bomb costs a bounded amount of memory.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
import zipfile
from pathlib import Path

from pipelines.readers.common import (
    MAX_EPUB_MEMBER_BYTES,
    MAX_EPUB_TOTAL_BYTES,
    Extracted,
    Heading,
    ReaderError,
    package_version,
)
from pipelines.readers.gutenberg import ebook_number, strip_gutenberg
from pipelines.readers.markup import Block, html_blocks

_HTML_TYPES = {"application/xhtml+xml", "text/html", "application/xml", "text/x-oeb1-document"}
_FRONT_MATTER = {"cover", "toc", "copyright-page", "copyright", "loi", "lot", "titlepage", "title-page"}
_CONTENTS_TITLE = re.compile(r"^\s*(?:table of )?contents\s*:?\s*$", re.IGNORECASE)
_OPS = "http://www.idpf.org/2007/ops"


class _Budget:
    def __init__(self, path: Path, total: int = MAX_EPUB_TOTAL_BYTES, member: int = MAX_EPUB_MEMBER_BYTES):
        self.path, self.left, self.member = path, total, member

    def read(self, archive: zipfile.ZipFile, name: str) -> bytes:
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise ReaderError(f"{self.path}: the EPUB lists {name!r} but does not contain it") from None
        limit = min(self.member, self.left)
        if info.file_size > limit:
            raise ReaderError(self._too_big(name, info.file_size))
        chunks, size = [], 0
        try:
            with archive.open(info) as member:
                while True:
                    chunk = member.read(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:  # the header lied about the size
                        raise ReaderError(self._too_big(name, size))
                    chunks.append(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise ReaderError(f"{self.path}: the EPUB's {name!r} cannot be decompressed ({exc})") from None
        self.left -= size
        return b"".join(chunks)

    def _too_big(self, name: str, size: int) -> str:
        return (f"{self.path}: the EPUB's {name!r} decompresses to over {min(self.member, self.left) // 2**20} MiB "
                f"(at least {size // 2**20} MiB); refusing it as a possible zip bomb")


def read_epub(path: Path) -> Extracted:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ReaderError(f"{path}: not a readable EPUB (the zip archive is corrupt or truncated: {exc})") from None
    with archive:
        if any(info.flag_bits & 0x1 for info in archive.infolist()):
            raise ReaderError(f"{path}: the EPUB is password-protected (its zip entries are encrypted); "
                              "longsum cannot read it")
        budget = _Budget(path)
        _refuse_drm(archive, budget, path)
        opf_name = _package_path(archive, budget, path)
        opf = _xml(budget.read(archive, opf_name), path, opf_name)
        base = posixpath.dirname(opf_name)
        manifest = {}
        for item in _all(opf, "item"):
            href = item.get("href")
            if item.get("id") and href:
                manifest[item.get("id")] = {
                    "href": _resolve(base, href), "type": (item.get("media-type") or "").lower(),
                    "properties": set((item.get("properties") or "").split()),
                }
        spine = next(_all(opf, "spine"), None)
        itemrefs = list(_all(spine, "itemref")) if spine is not None else []
        if not itemrefs:
            raise ReaderError(f"{path}: the EPUB has no spine (no reading order); cannot read it")
        title = _text(next(_all(opf, "title"), None))
        creator = _text(next(_all(opf, "creator"), None))
        language = _text(next(_all(opf, "language"), None))
        gutenberg_id = _gutenberg_id(" ".join(_text(el) for name in ("identifier", "source") for el in _all(opf, name)))
        front = {_resolve(base, ref.get("href", "")).split("#")[0]
                 for ref in _all(opf, "reference") if (ref.get("type") or "").lower() in _FRONT_MATTER}
        nav = next((m for m in manifest.values() if "nav" in m["properties"]), None)
        toc = _toc(archive, budget, manifest, spine, nav, path)
        front |= {href for href in _landmarks(archive, budget, nav)}

        blocks: list[Block] = []
        anchors: dict[tuple[str, str | None], int] = {}
        skipped = []
        boilerplate: list[str] = []
        for ref in itemrefs:
            item = manifest.get(ref.get("idref") or "")
            if item is None or item["type"] not in _HTML_TYPES:
                continue
            href = item["href"]
            if (ref.get("linear") or "yes").lower() == "no" or href in front or item is nav:
                skipped.append(href)
                continue
            page = html_blocks(budget.read(archive, href))
            boilerplate.extend(page.boilerplate)
            if _is_contents(page.blocks):
                skipped.append(href)
                continue
            keep = _drop_contents_lists(page.blocks)
            renumber = {}
            anchors[(href, None)] = len(blocks)
            for index, block in enumerate(page.blocks):
                renumber[index] = len(blocks)
                if keep[index]:
                    blocks.append(block)
            renumber[len(page.blocks)] = len(blocks)
            for anchor, index in page.anchors.items():
                anchors[(href, anchor)] = renumber.get(index, len(blocks))
    text, offsets = _join(blocks)
    sections = _sections(toc, anchors, offsets, blocks, len(text))
    full = text
    text, cut = strip_gutenberg(full)
    metadata = {"skipped_items": skipped} if skipped else {}
    if cut:
        # Gutenberg's generated back matter ("More...", "About Project Gutenberg") is a spine item
        # of its own that leads up to the end marker: it goes with the licence.
        item_starts = [offsets[index] for (href, anchor), index in anchors.items() if anchor is None and index < len(blocks)]
        back = max((s for s in item_starts if cut["start_offset"] < s <= cut["end_offset"]), default=None)
        if back is not None and cut["end_offset"] - back < 1000:
            end = back
            while end > cut["start_offset"] and full[end - 1] in " \n":
                end -= 1
            text = full[cut["start_offset"]:end] + "\n"
            cut["footer_chars"] = len(full) - end
        metadata["gutenberg"] = {k: v for k, v in cut.items() if k not in ("start_offset", "end_offset")}
        shift, length = cut["start_offset"], len(text)
        sections = [Heading(s.title, s.start - shift, s.level, s.kind) for s in sections
                    if 0 <= s.start - shift < length - 1]
    if boilerplate:  # Gutenberg's header and licence, marked as such and left out while reading
        gutenberg = metadata.setdefault("gutenberg", {})
        gutenberg["marked_chars"] = sum(map(len, boilerplate))
        gutenberg["ebook"] = gutenberg.get("ebook") or ebook_number(" ".join(boilerplate))
    if "gutenberg" in metadata and not metadata["gutenberg"].get("ebook"):
        # the header may be in a skipped item or say no number: the package's identifier does
        metadata["gutenberg"]["ebook"] = gutenberg_id
    if language:
        metadata["language"] = language
    if creator:
        metadata["author"] = creator
    if not text.strip():
        raise ReaderError(f"{path}: the EPUB contains no readable text")
    return Extracted(
        text=text, format="epub", extractor="zipfile+lxml", extractor_version=f"lxml {package_version('lxml')}",
        headings=sections, title=title or None, pages=None, metadata=metadata,
    )


# --- package ------------------------------------------------------------------


def _gutenberg_id(identifiers: str) -> int | None:
    """The ebook number in a Gutenberg package's identifier or source
    ("http://www.gutenberg.org/ebooks/1342", "http://www.gutenberg.org/2701")."""
    match = re.search(r"gutenberg\.org/(?:ebooks/|files/)?(\d+)\b", identifiers, re.IGNORECASE)
    return int(match.group(1)) if match else None


def _package_path(archive: zipfile.ZipFile, budget: _Budget, path: Path) -> str:
    names = archive.namelist()
    if "META-INF/container.xml" in names:
        container = _xml(budget.read(archive, "META-INF/container.xml"), path, "META-INF/container.xml")
        for rootfile in _all(container, "rootfile"):
            full = rootfile.get("full-path")
            if full and full in names:
                return full
    opfs = [name for name in names if name.lower().endswith(".opf")]
    if not opfs:
        raise ReaderError(f"{path}: not an EPUB (no META-INF/container.xml and no .opf package file)")
    return opfs[0]


def _refuse_drm(archive: zipfile.ZipFile, budget: _Budget, path: Path) -> None:
    """Encrypted chapters (DRM) read as noise: say so instead. Obfuscated fonts,
    which many EPUBs have, are harmless."""
    if "META-INF/encryption.xml" not in archive.namelist():
        return
    root = _xml(budget.read(archive, "META-INF/encryption.xml"), path, "META-INF/encryption.xml")
    for reference in _all(root, "cipherreference"):
        uri = (reference.get("URI") or "").lower()
        if uri.endswith((".xhtml", ".html", ".htm", ".xml", ".opf", ".ncx")):
            raise ReaderError(f"{path}: the EPUB is DRM-protected (its chapters are encrypted); longsum cannot read it")


def _xml(data: bytes, path: Path, name: str):
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError:
        root = None
    if root is None:
        raise ReaderError(f"{path}: the EPUB's {name} is not readable XML")
    return root


def _local(element) -> str:
    tag = element.tag if isinstance(element.tag, str) else ""
    return tag.rsplit("}", 1)[-1].lower()


def _all(root, name: str):
    if root is None:
        return iter(())
    return (el for el in root.iter() if _local(el) == name)


def _text(element) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _resolve(base: str, href: str) -> str:
    href = urllib.parse.unquote(href.strip())
    target, _, fragment = href.partition("#")
    joined = posixpath.normpath(posixpath.join(base, target)) if target else ""
    return f"{joined}#{fragment}" if fragment else joined


# --- table of contents ----------------------------------------------------------


def _toc(archive, budget, manifest, spine, nav, path) -> list[tuple[str, str, int]]:
    """(title, href#fragment, depth) of each contents entry, in order."""
    if nav is not None:
        entries = _nav_entries(budget.read(archive, nav["href"]), posixpath.dirname(nav["href"]), "toc")
        if entries:
            return entries
    ncx_id = spine.get("toc") if spine is not None else None
    ncx = manifest.get(ncx_id or "") or next((m for m in manifest.values() if m["type"] == "application/x-dtbncx+xml"), None)
    if ncx is None:
        return []
    root = _xml(budget.read(archive, ncx["href"]), path, ncx["href"])
    base = posixpath.dirname(ncx["href"])
    entries = []

    def visit(element, depth):
        for point in element:
            if _local(point) != "navpoint":
                continue
            label = next(_all(next((c for c in point if _local(c) == "navlabel"), None), "text"), None)
            content = next((c for c in point if _local(c) == "content"), None)
            if content is not None and content.get("src"):
                entries.append((_text(label), _resolve(base, content.get("src")), depth))
            visit(point, depth + 1)

    nav_map = next(_all(root, "navmap"), None)
    if nav_map is not None:
        visit(nav_map, 1)
    return entries


def _nav_entries(data: bytes, base: str, kind: str) -> list[tuple[str, str, int]]:
    from pipelines.readers.markup import parse_html

    root = parse_html(data)
    if root is None:
        return []
    navs = [el for el in root.iter() if _local(el) == "nav"]
    chosen = [n for n in navs if kind in (n.get(f"{{{_OPS}}}type") or n.get("epub:type") or "").split()]
    if not chosen and kind == "toc" and navs:
        chosen = navs[:1]
    entries = []
    for nav in chosen:
        for link in nav.iter():
            if _local(link) == "a" and link.get("href"):
                depth = sum(1 for anc in link.iterancestors() if _local(anc) in ("ol", "ul")) or 1
                entries.append((_text(link), _resolve(base, link.get("href")), depth))
    return entries


def _landmarks(archive, budget, nav) -> list[str]:
    """Front matter named by the EPUB 3 landmarks list (cover, toc, copyright ...)."""
    if nav is None:
        return []
    from pipelines.readers.markup import parse_html

    root = parse_html(budget.read(archive, nav["href"]))
    if root is None:
        return []
    base = posixpath.dirname(nav["href"])
    hrefs = []
    for nav_element in (el for el in root.iter() if _local(el) == "nav"):
        if "landmarks" not in (nav_element.get(f"{{{_OPS}}}type") or nav_element.get("epub:type") or ""):
            continue
        for link in nav_element.iter():
            kind = (link.get(f"{{{_OPS}}}type") or link.get("epub:type") or "").lower()
            if _local(link) == "a" and link.get("href") and kind in _FRONT_MATTER:
                hrefs.append(_resolve(base, link.get("href")).split("#")[0])
    return hrefs


# --- text -----------------------------------------------------------------------


def _is_link(block: Block) -> bool:
    return block.links >= 0.8 * len(block.text)


def _is_contents(blocks: list[Block]) -> bool:
    """A page that is a table of contents: nearly every block a link."""
    if len(blocks) < 3:
        return False
    return sum(1 for b in blocks if _is_link(b)) >= 0.6 * len(blocks)


def _drop_contents_lists(blocks: list[Block]) -> list[bool]:
    """Runs of three or more link-only paragraphs (a contents list inside a
    chapter file), with a "Contents" title just before them."""
    keep = [True] * len(blocks)
    i = 0
    while i < len(blocks):
        j = i
        while j < len(blocks) and _is_link(blocks[j]):
            j += 1
        if j - i >= 3:
            for k in range(i, j):
                keep[k] = False
            if i > 0 and _CONTENTS_TITLE.match(blocks[i - 1].text):
                keep[i - 1] = False
        i = max(j, i + 1)
    return keep


def _join(blocks: list[Block]) -> tuple[str, list[int]]:
    parts, offsets, offset = [], [], 0
    for block in blocks:
        if parts:
            parts.append("\n\n")
            offset += 2
        offsets.append(offset)
        parts.append(block.text)
        offset += len(block.text)
    offsets.append(offset + 2)
    return "".join(parts) + ("\n" if parts else ""), offsets


def _sections(toc, anchors, offsets, blocks, length) -> list[Heading]:
    sections: list[Heading] = []
    seen = set()
    for title, target, depth in toc:
        href, _, fragment = target.partition("#")
        index = anchors.get((href, fragment or None))
        if index is None and fragment:
            index = anchors.get((href, None))
        if index is None or index >= len(blocks):
            continue
        start = offsets[index]
        title = " ".join(title.split()) or blocks[index].text.split("\n")[0][:80]
        if start in seen or start >= length:
            continue
        seen.add(start)
        sections.append(Heading(title=title, start=start, level=depth, kind="chapter"))
    if not sections:  # no usable contents: the chapter headings themselves
        sections = [Heading(title=" ".join(b.text.split())[:120], start=offsets[i], level=b.level, kind="chapter")
                    for i, b in enumerate(blocks) if b.kind == "heading" and b.level <= 3]
    return sorted(sections, key=lambda s: s.start)
