"""Load a file into a normalised `Document` and find its structure.

Plain text, Markdown, LaTeX and code: normalisation is decoding (UTF-8 with
or without BOM, UTF-16/32 with BOM, or a detected legacy encoding) and
turning CRLF / CR line ends into LF; a Project Gutenberg header and licence
are cut. PDF, EPUB and HTML (recognised by their content as well as their
extension) are read by `pipelines.readers`, which drop page furniture and
boilerplate and find chapters and sections. Either way `Document.text` is
the text longsum chunks, so offsets into it are stable and chunking can be
verified as lossless against it.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.readers import SUFFIX_FORMATS, ReaderError, package_version, read_file, sniff_format
from pipelines.readers.gutenberg import strip_gutenberg

KINDS = ("book", "paper", "code")

CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".java": "java",
    ".kt": "kotlin", ".scala": "scala", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".cs": "csharp", ".go": "go",
    ".rs": "rust", ".rb": "ruby", ".php": "php", ".swift": "swift", ".m": "objc",
    ".sh": "shell", ".bash": "shell", ".lua": "lua", ".r": "r", ".jl": "julia",
    ".sql": "sql", ".hs": "haskell", ".ex": "elixir", ".erl": "erlang",
}
PAPER_SUFFIXES = {".md", ".markdown", ".tex", ".rst"}
# Files with these extensions are text (code files even if they start like HTML).
TEXT_SUFFIXES = {".txt", ".text", *PAPER_SUFFIXES, *CODE_LANGUAGES}
_SNIFF_BYTES = 8192
PASSWORD_ENV = "LONGSUM_PDF_PASSWORD"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Signatures of common binary formats, checked before any decoding attempt.
_BINARY_MAGIC = {
    b"\x89PNG": "PNG image", b"\x1f\x8b": "gzip archive", b"PK\x03\x04": "zip archive",
    b"%PDF": "PDF document", b"\xff\xd8\xff": "JPEG image", b"GIF8": "GIF image",
    b"\x7fELF": "ELF executable", b"BZh": "bzip2 archive", b"\xfd7zXZ": "xz archive",
    b"SQLite format 3": "SQLite database", b"\x28\xb5\x2f\xfd": "zstd archive",
}


class DocumentError(ValueError):
    """A file that cannot be summarized; the message is one line for the user."""


@dataclass(frozen=True)
class Section:
    title: str
    start: int  # character offset of the section's first line
    level: int = 1
    kind: str = "chapter"  # chapter | heading | function | class


@dataclass(frozen=True)
class Document:
    path: str
    text: str
    kind: str
    encoding: str
    sections: tuple[Section, ...] = field(default_factory=tuple)
    language: str | None = None
    format: str = "text"  # text | pdf | epub | html
    pages: int | None = None  # PDF page count
    extractor: str | None = None  # what read the file, e.g. "pypdfium2"
    extractor_version: str | None = None
    # what reading removed or noticed (Gutenberg header/licence, pages without text ...)
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
    doc_title: str | None = None  # the title the file itself gives (PDF info, EPUB package, HTML <title>)

    @property
    def doc_id(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def title(self) -> str:
        return self.doc_title or Path(self.path).stem

    @property
    def boundaries(self) -> list[int]:
        """Section starts, for chunkers that prefer to break there."""
        return sorted({s.start for s in self.sections if s.start > 0})


def load_document(path: str | Path, kind: str | None = None, *, password: str | None = None) -> Document:
    """Read any supported file; `password` (else $LONGSUM_PDF_PASSWORD) opens
    an encrypted PDF: it is used for reading only and kept nowhere."""
    path = Path(path)
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    if kind is not None and kind not in KINDS:
        raise DocumentError(f"unknown document kind {kind!r}; choose one of {', '.join(KINDS)}")
    fmt = sniff_format(path, _read_bytes(path, _SNIFF_BYTES), set(CODE_LANGUAGES))
    if fmt != "text":
        return _load_extracted(path, fmt, kind, password)
    raw = _read_bytes(path)
    text, encoding = decode_bytes(raw, path)
    del raw
    text = normalise_newlines(text)
    if not text.strip():
        raise DocumentError(f"{path}: the file contains only whitespace")
    kind = kind or detect_kind(path, text)
    metadata = {}
    if kind != "code":
        text, cut = strip_gutenberg(text)
        if cut:
            metadata["gutenberg"] = {k: v for k, v in cut.items() if k not in ("start_offset", "end_offset")}
            if not text.strip():
                raise DocumentError(f"{path}: nothing is left between the Project Gutenberg header and licence")
    language = CODE_LANGUAGES.get(path.suffix.lower()) if kind == "code" else None
    return Document(
        path=str(path), text=text, kind=kind, encoding=encoding,
        sections=tuple(find_sections(text, kind, language)), language=language,
        format="text", extractor="longsum", extractor_version=package_version("longsum"), metadata=metadata,
    )


def _load_extracted(path: Path, fmt: str, kind: str | None, password: str | None) -> Document:
    try:
        extracted = read_file(path, fmt, password=password)
    except ReaderError as exc:
        raise DocumentError(str(exc)) from None
    except MemoryError:
        raise DocumentError(f"{path}: too large to read into memory") from None
    except Exception as exc:  # noqa: BLE001 - whatever a parser raises, the user gets one line naming the file
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DocumentError(f"{path}: cannot be read as {fmt.upper()} ({reason})") from None
    text = normalise_newlines(extracted.text)
    if not text.strip():
        raise DocumentError(f"{path}: no text could be extracted")
    kind = kind or _extracted_kind(path, fmt, text, extracted)
    section_kind = "chapter" if kind == "book" else "heading"
    sections = tuple(
        Section(title=h.title, start=h.start, level=h.level, kind=section_kind)
        for h in extracted.headings if 0 <= h.start < len(text)
    ) or tuple(find_sections(text, kind))
    return Document(
        path=str(path), text=text, kind=kind, encoding="utf-8", sections=sections, format=extracted.format,
        pages=extracted.pages, extractor=extracted.extractor, extractor_version=extracted.extractor_version,
        metadata=extracted.metadata, doc_title=extracted.title,
    )


def _extracted_kind(path: Path, fmt: str, text: str, extracted) -> str:
    """An EPUB is a book; a web page is a book when it is one (a Gutenberg
    book, chapter headings), else a paper: a documentation page or an article
    has sections, not chapters or characters."""
    if fmt == "epub":
        return "book"
    if fmt == "html":
        chapters = sum(1 for h in extracted.headings if _CHAPTER_WORD.match(h.title) or _CHAPTER_NUMBER.match(h.title)
                       or _NAMED_PART.match(h.title))
        return "book" if extracted.metadata.get("gutenberg") or chapters >= 2 else "paper"
    return detect_kind(path, text)


def is_document(path: Path) -> bool:
    """Whether a file of a folder is one longsum reads: a text, markup or code
    extension, or a PDF, EPUB or HTML file by its extension or its content."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES or suffix in SUFFIX_FORMATS:
        return True
    try:
        return sniff_format(path, _read_bytes(path, _SNIFF_BYTES), set(CODE_LANGUAGES)) != "text"
    except DocumentError:  # unreadable or empty: not recognisably a document
        return False


def _read_bytes(path: Path, limit: int = -1) -> bytes:
    if not path.exists():
        raise DocumentError(f"{path}: no such file")
    if path.is_dir():
        raise DocumentError(f"{path}: is a directory, not a file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(limit)
    except PermissionError:
        raise DocumentError(f"{path}: permission denied") from None
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise DocumentError(f"{path}: the file is empty (0 bytes)")
    return raw


def decode_bytes(raw: bytes, path: Path | str = "<bytes>") -> tuple[str, str]:
    """Decode raw bytes to text, refusing binary data; returns (text, encoding)."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding), encoding
            except UnicodeDecodeError:
                raise DocumentError(f"{path}: starts with a {encoding} byte-order mark but does not decode as {encoding}") from None
    for magic, what in _BINARY_MAGIC.items():
        if raw.startswith(magic):
            raise DocumentError(f"{path}: looks like a {what}, not text")
    if b"\x00" in raw[:8192]:
        raise DocumentError(f"{path}: contains NUL bytes; it looks binary, not text")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    return _decode_legacy(raw, path)


# Short or repetitive samples cannot tell cp1252 from cp1250 or cp1257 apart
# (same chaos, same language coherence); the most common legacy code page
# for Western text wins unless another decodes clearly better.
_PREFERRED_LEGACY = ("cp1252", "latin_1")
_CHAOS_SLACK = 0.15
_COHERENCE_SLACK = 0.02


def _decode_legacy(raw: bytes, path: Path | str) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(raw[:1_000_000]))
    if not matches:
        raise DocumentError(f"{path}: not text in any encoding that could be detected (binary?)")
    best = matches[0]
    encoding = best.encoding
    for preferred in _PREFERRED_LEGACY:
        close = [
            m for m in matches
            if preferred in (m.encoding, *m.could_be_from_charset)
            and m.chaos <= best.chaos + _CHAOS_SLACK and m.coherence >= best.coherence - _COHERENCE_SLACK
        ]
        if close:
            encoding = preferred
            break
    for candidate in dict.fromkeys((encoding, best.encoding)):
        if _control_ratio(raw[:65536], candidate) > 0.01:
            continue
        try:
            return raw.decode(candidate), candidate
        except (UnicodeDecodeError, LookupError):
            continue
    raise DocumentError(f"{path}: not text in any encoding that could be detected (binary?)")


def _control_ratio(sample: bytes, encoding: str) -> float:
    text = sample.decode(encoding, errors="replace")
    if not text:
        return 0.0
    controls = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\n\r\t\f") or ch == "\ufffd")
    return controls / len(text)


def normalise_newlines(text: str) -> str:
    if "\r" not in text:
        return text  # the common case: no copy of a large text
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- kind detection ---------------------------------------------------------

_PAPER_CUES = re.compile(
    r"^\s*(#+\s*)?(abstract|introduction|related work|references|bibliography|conclusions?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def detect_kind(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in CODE_LANGUAGES:
        return "code"
    if suffix in PAPER_SUFFIXES:
        return "paper"
    if len({m.group(2).lower() for m in _PAPER_CUES.finditer(text[:200_000])}) >= 2:
        return "paper"
    return "book"


# --- structure ---------------------------------------------------------------

_ROMAN = r"[IVXLCDM]+"
_NUMBER_WORDS = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[a-z]+teen|twenty|thirty|forty|fifty)(?:[- ][a-z]+)?"
_CHAPTER_WORD = re.compile(
    rf"^[ \t]*(?:chapter|book|part|adventure|letter|volume|stave)[ \t]+(?:{_ROMAN}|\d+|{_NUMBER_WORDS})\b[^\n]{{0,80}}$",
    re.IGNORECASE | re.MULTILINE,
)
# Case-sensitive: "I." or "XIV. THE RETURN" or "12" alone on a line, but not "did."
_CHAPTER_NUMBER = re.compile(
    rf"^[ \t]*(?:{_ROMAN}\.?|{_ROMAN}\.[ \t]+[A-Z][^a-z\n]{{0,80}}|\d{{1,3}}\.?)[ \t]*$",
    re.MULTILINE,
)
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(\S[^\n]*?)[ \t#]*$", re.MULTILINE)
_LATEX_HEADING = re.compile(r"^[ \t]*\\(part|chapter|section|subsection|subsubsection)\*?\{([^}\n]*)\}", re.MULTILINE)
_LATEX_LEVELS = {"part": 1, "chapter": 1, "section": 1, "subsection": 2, "subsubsection": 3}
_CODE_DEFINITION = re.compile(
    r"^(?P<indent>[ \t]*)(?:export[ \t]+)?(?:(?:public|private|protected|static|async|final|abstract|pub(?:\([a-z]+\))?|inline|virtual)[ \t]+)*"
    r"(?P<kind>def|class|function|func|fn|interface|struct|enum|trait|impl|module|sub)[ \t]+(?P<name>[A-Za-z_$][\w$]*)",
    re.MULTILINE,
)


def find_sections(text: str, kind: str, language: str | None = None) -> list[Section]:
    if kind == "code":
        return code_sections(text, language)
    if kind == "paper":
        return paper_sections(text)
    return chapter_sections(text)


_NAMED_PART = re.compile(
    r"^[ \t]*(?:Prologue|PROLOGUE|Epilogue|EPILOGUE|Preface|PREFACE|Foreword|FOREWORD|Afterword|AFTERWORD)\.?[ \t]*$",
    re.MULTILINE,
)
_TERMINAL_END = re.compile(r"[.!?:;,\u2014-][\"'\u201d\u2019)\]]*$")


def chapter_sections(text: str) -> list[Section]:
    """Chapter headings: a short line that stands alone between blank lines;
    a chapter heading whose title wraps onto a second line ("CHAPTER 56. Of
    the Less Erroneous Pictures of Whales, and the True / Pictures of Whaling
    Scenes."), when the book spells its other headings the same way; and the
    unnumbered parts (Prologue, Preface, Epilogue ...). A table of contents,
    a run of headings with no text between them that the book repeats
    later, is not a set of sections."""
    found: list[Section] = []
    standalone_words: dict[str, int] = {}
    wrapped = []
    matches = sorted([*_CHAPTER_WORD.finditer(text), *_CHAPTER_NUMBER.finditer(text), *_NAMED_PART.finditer(text)],
                     key=lambda m: m.start())
    for match in matches:
        start = match.start()
        before = text[max(0, start - 2):start]
        after = text[match.end():match.end() + 2]
        opens = start == 0 or before.endswith("\n\n") or before == "\n"
        title = match.group().strip()
        if not title or (found and found[-1].start == start):
            continue
        if opens and (after.startswith("\n\n") or after == "\n" or not after):
            found.append(Section(title=title, start=start, kind="chapter"))
            standalone_words[title.split()[0]] = standalone_words.get(title.split()[0], 0) + 1
        elif opens and match.re is _CHAPTER_WORD and after[:1] == "\n" and not _TERMINAL_END.search(title):
            wrapped.append(match)
    for match in wrapped:  # the heading's title goes on for one more line, then a blank line
        keyword = match.group().split()[0]
        rest = re.match(r"\n([^\n]{1,80})(?:\n[ \t]*\n|\n?\Z)", text[match.end():])
        if rest and rest.group(1).strip() and standalone_words.get(keyword, 0) >= 2:
            title = " ".join(f"{match.group()} {rest.group(1)}".split())
            found.append(Section(title=title, start=match.start(), kind="chapter"))
    found.sort(key=lambda s: s.start)
    return _without_contents(text, found)


def _without_contents(text: str, sections: list[Section]) -> list[Section]:
    """Drop runs of headings with (nearly) no text between them: the book's
    table of contents (three or more whose titles come again later, or six or
    more whatever follows)."""
    if len(sections) < 3:
        return sections
    ends = [match_end(text, s) for s in sections]
    drop: set[int] = set()
    run = [0]
    for i in range(1, len(sections) + 1):
        close = i < len(sections) and len(text[ends[i - 1]:sections[i].start].strip()) < 40
        if close:
            run.append(i)
            continue
        if len(run) >= 3:
            later = {" ".join(s.title.split()).lower() for s in sections[run[-1] + 1:]}
            repeated = [j for j in run if " ".join(sections[j].title.split()).lower() in later]
            if len(run) >= 6:  # no book has six headings in a row with no text under them
                drop.update(run)
            elif len(repeated) >= 0.8 * len(run):
                drop.update(repeated)
        run = [i]
    return [s for i, s in enumerate(sections) if i not in drop]


def match_end(text: str, section: Section) -> int:
    """Where a heading's own text ends (its title may wrap over lines)."""
    end = section.start
    for word in section.title.split():
        found = text.find(word, end)
        if found < 0:
            break
        end = found + len(word)
    return end


def paper_sections(text: str) -> list[Section]:
    sections = [
        Section(title=m.group(2).strip(), start=m.start(), level=len(m.group(1)), kind="heading")
        for m in _MARKDOWN_HEADING.finditer(text)
    ]
    sections += [
        Section(title=m.group(2).strip(), start=m.start(), level=_LATEX_LEVELS[m.group(1)], kind="heading")
        for m in _LATEX_HEADING.finditer(text)
    ]
    return sorted(sections, key=lambda s: s.start)


def code_sections(text: str, language: str | None) -> list[Section]:
    if language == "python":
        try:
            return _python_sections(text)
        except SyntaxError:
            pass  # fall back to the pattern scan below
    return [
        Section(
            title=m.group("name"), start=m.start(),
            level=1 + len(m.group("indent").expandtabs(4)) // 4,
            kind="class" if m.group("kind") in ("class", "interface", "struct", "trait", "impl", "enum") else "function",
        )
        for m in _CODE_DEFINITION.finditer(text)
    ]


def _python_sections(text: str) -> list[Section]:
    tree = ast.parse(text)
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    sections = []

    def visit(node: ast.AST, level: int, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first_line = min([child.lineno] + [d.lineno for d in child.decorator_list])
                name = prefix + child.name
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                sections.append(Section(title=name, start=line_starts[first_line - 1], level=level, kind=kind))
                visit(child, level + 1, name + ".")

    visit(tree, 1, "")
    return sorted(sections, key=lambda s: s.start)
