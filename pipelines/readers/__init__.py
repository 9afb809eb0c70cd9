"""Readers for formats that are not plain text: PDF, EPUB and HTML.

Each reader turns a file into an `Extracted`: the text longsum will chunk
(paragraphs separated by blank lines, page furniture and boilerplate gone),
the sections it found (character offsets into that text), and what it used
to read the file. `pipelines.documents` wraps that into a `Document`.

Readers raise `ReaderError` with a one-line message for the user; documents
turns it into its own `DocumentError`.
"""

from __future__ import annotations

import importlib.metadata
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("text", "pdf", "epub", "html")
SUFFIX_FORMATS = {".pdf": "pdf", ".epub": "epub", ".html": "html", ".htm": "html", ".xhtml": "html"}

# Limits that keep memory bounded whatever the file claims about itself.
MAX_HTML_BYTES = 64 * 1024 * 1024
MAX_EPUB_MEMBER_BYTES = 32 * 1024 * 1024  # one XHTML file of a book is rarely over 1 MB
MAX_EPUB_TOTAL_BYTES = 256 * 1024 * 1024  # all the decompressed members read from one EPUB


class ReaderError(ValueError):
    """A file a reader cannot read; the message is one line for the user."""


@dataclass(frozen=True)
class Heading:
    title: str
    start: int
    level: int = 1
    kind: str = "heading"  # heading | chapter


@dataclass
class Extracted:
    text: str
    format: str
    extractor: str
    extractor_version: str
    headings: list[Heading] = field(default_factory=list)
    title: str | None = None
    pages: int | None = None
    metadata: dict = field(default_factory=dict)


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- format detection ---------------------------------------------------------

_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>])",
    re.IGNORECASE | re.DOTALL,
)


def sniff_format(path: Path, head: bytes, text_suffixes: set[str]) -> str:
    """The format by content first (magic bytes), then by extension.

    `head` is the first few KB of the file. Files with a text or code
    extension are only sniffed for binary containers: a .php or .md file that
    starts with `<html>` is still read as text."""
    suffix = path.suffix.lower()
    if b"%PDF-" in head[:1024]:  # the PDF spec tolerates junk before the header
        return "pdf"
    if head.startswith(b"PK\x03\x04") and _is_epub(path):
        return "epub"
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix not in text_suffixes and _HTML_START.match(head[:4096]):
        return "html"
    return "text"


def _is_epub(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                info = archive.getinfo("mimetype")
                if info.file_size < 100:
                    return archive.read("mimetype").strip() == b"application/epub+zip"
            return "META-INF/container.xml" in names
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
        return False


def read_file(path: Path, fmt: str, password: str | None = None) -> Extracted:
    if fmt == "pdf":
        from pipelines.readers.pdf import read_pdf

        return read_pdf(path, password=password)
    if fmt == "epub":
        from pipelines.readers.epub import read_epub

        return read_epub(path)
    if fmt == "html":
        from pipelines.readers.html import read_html

        return read_html(path)
    raise ValueError(f"no reader for format {fmt!r}")


# --- text clean-up shared by the readers --------------------------------------

_LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\ufffe\u0002"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and newline
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


def clean_inline(text: str) -> str:
    """Ligatures spelled out, invisible marks dropped, runs of spaces made one
    (newlines are kept; callers decide what a line break means)."""
    for ligature, letters in _LIGATURES.items():
        if ligature in text:
            text = text.replace(ligature, letters)
    text = _CONTROL.sub("", text.translate(_INVISIBLE))
    return _SPACES.sub(" ", text)


def join_blocks(blocks: list[tuple[str, str, int]]) -> tuple[str, list[Heading]]:
    """Paragraphs (kind, text, level) into one text with blank lines between
    them; headings become sections at their offsets."""
    parts: list[str] = []
    headings: list[Heading] = []
    offset = 0
    for kind, text, level in blocks:
        text = text.strip()
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        if kind == "heading":
            headings.append(Heading(title=" ".join(text.split()), start=offset, level=level))
        parts.append(text)
        offset += len(text)
    return "".join(parts) + ("\n" if parts else ""), headings
