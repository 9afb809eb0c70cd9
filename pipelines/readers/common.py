"""What the readers share: the result type, the one-line error, limits,
and the clean-up of extracted text."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field

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


def join_blocks(blocks: list[tuple[str, str, int]], starts: list[int] | None = None) -> tuple[str, list[Heading]]:
    """Paragraphs (kind, text, level) into one text with blank lines between
    them; headings become sections at their offsets. `starts`, when given,
    receives each block's offset in the text (an empty block: where the next begins)."""
    parts: list[str] = []
    headings: list[Heading] = []
    offset = 0
    for kind, text, level in blocks:
        text = text.strip()
        if starts is not None:
            starts.append(offset + 2 if parts and text else offset)
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
