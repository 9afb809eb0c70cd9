"""Readers for formats that are not plain text: PDF, EPUB and HTML.

Each reader turns a file into an `Extracted`: the text longsum will chunk
(paragraphs separated by blank lines, page furniture and boilerplate gone),
the sections it found (character offsets into that text), and what it used
to read the file. `pipelines.documents` wraps that into a `Document`.

Readers raise `ReaderError` with a one-line message for the user; documents
turns it into its own `DocumentError`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from pipelines.readers.common import (
    MAX_EPUB_MEMBER_BYTES,
    MAX_EPUB_TOTAL_BYTES,
    MAX_HTML_BYTES,
    Extracted,
    Heading,
    ReaderError,
    clean_inline,
    join_blocks,
    package_version,
)

__all__ = [
    "FORMATS", "MAX_EPUB_MEMBER_BYTES", "MAX_EPUB_TOTAL_BYTES", "MAX_HTML_BYTES", "SUFFIX_FORMATS", "Extracted", "Heading", "ReaderError",
    "clean_inline", "join_blocks", "package_version", "read_file", "sniff_format",
]

FORMATS = ("text", "pdf", "epub", "html")
SUFFIX_FORMATS = {".pdf": "pdf", ".epub": "epub", ".html": "html", ".htm": "html", ".xhtml": "html"}

# --- format detection ---------------------------------------------------------

_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>])",
    re.IGNORECASE | re.DOTALL,
)


def sniff_format(path: Path, head: bytes, code_suffixes: set[str]) -> str:
    """The format by content first (magic bytes, an HTML start), then by extension.

    `head` is the first few KB of the file. Text that starts with
    `<!DOCTYPE html` or `<html` is HTML whatever its extension (a page saved
    as .txt), except source code: a .php template that starts with `<html>`
    is code to summarize as code."""
    suffix = path.suffix.lower()
    if b"%PDF-" in head[:1024]:  # the PDF spec tolerates junk before the header
        return "pdf"
    if head.startswith(b"PK\x03\x04") and _is_epub(path):
        return "epub"
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix not in code_suffixes and _HTML_START.match(head[:4096]):
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
