"""PDF through pypdfium2 (PDFium; Apache-2.0 / BSD-3).

PDFium's own text runs two columns together at page furniture, keeps the
hyphens of words broken at line ends and puts footnotes and figure captions
in the middle of sentences. This reader works from PDFium's characters and
their boxes instead:

1. characters -> visual lines (by baseline), split into segments at wide gaps;
   rotated text (arXiv stamps, margin notes) is dropped;
2. page furniture out: line-number columns, running headers and footers
   (the same text, digits aside, near the top or bottom of many pages) and
   page numbers;
3. reading order: a gutter found from where segments start and end splits a
   page into columns; full-width lines (titles, wide figures) cut the page
   into bands, read top to bottom, left column before right;
4. blocks of lines -> paragraphs (indents, short last lines, bullets,
   hanging indents in reference lists; a line in lower case goes on a
   sentence); a word hyphenated at a line end is joined or keeps its hyphen
   as the document's own words decide (`_keeps_hyphen`: ACL-2008,
   state-of-the-art, self-references, instructions); raised footnote marks
   are dropped (`conferences1` -> `conferences`);
5. floats out of the flow: footnotes, captions and tables (also a
   full-width table whose cells fall on both sides of the gutter) are
   emitted after the paragraph they interrupt, so sentences stay whole;
6. numbered headings ("1 Introduction", "2.1 Data", "A Appendix") and the
   usual unnumbered ones (Abstract, References ...) become sections.
"""

from __future__ import annotations

import ctypes
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.readers.common import Extracted, ReaderError, clean_inline, join_blocks, package_version

HYPHEN_MARK = "\x02"  # PDFium's code for a hyphen it takes for a line-end hyphenation
_BULLET = re.compile(r"^(?:[\u2022\u25e6\u25aa\u25cf\u2023\u2043\u2219\u00b7\u25a0\u25a1\u2013*]\s|\(?[0-9]{1,2}[.)]\s|\([a-z]\)\s|\[\d{1,3}\]\s)")
_CAPTION = re.compile(r"^(?:Figure|Fig\.|Table|Algorithm|Listing|Chart|Exhibit)\s*[A-Z]?\d+(?:\.\d+)?\s*[:.|]", re.IGNORECASE)
_NUMBERED_HEADING = re.compile(r"^(?P<num>\d{1,2}(?:\.\d{1,2}){0,3}|[A-H](?:\.\d{1,2}){0,3})\.?\s+(?P<title>[A-Z\u00c0-\u024f][^\n]{0,100})$")
_NAMED_HEADINGS = {
    "abstract", "introduction", "related work", "background", "method", "methods", "methodology", "experiments",
    "results", "discussion", "conclusion", "conclusions", "references", "bibliography", "acknowledgments",
    "acknowledgements", "acknowledgment", "acknowledgement", "limitations", "ethics statement",
    "ethical considerations", "appendix", "appendices", "supplementary material", "works cited",
}
_CHAPTER = re.compile(
    r"^(?:CHAPTER|Chapter|PART|Part|BOOK|Book|LETTER|Letter|VOLUME|Volume|STAVE|Stave)\s+"
    r"(?:[IVXLCDM]+|\d{1,3}|(?i:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[a-z]+teen|twenty|"
    r"thirty|forty|fifty|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)(?:-[a-z]+)?)\b[.:]?"
)
_REFERENCES = re.compile(r"^(?:\d+\.?\s+)?(?:references|bibliography|works cited|literature cited)\s*$", re.IGNORECASE)
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s*(?:/|of)\s*\d{1,4})?$", re.IGNORECASE)
_TERMINAL = re.compile(r"[.!?:;][\"'\u201d\u2019)\]]*$")


@dataclass
class _Line:
    page: int
    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    size: float  # the size most of its characters have
    bold: float  # share of bold characters
    first_small: bool = False  # starts with a superscript (a footnote mark)
    segments: int = 1
    column: str = "S"  # L | R | S(ingle or spanning)
    level: int = 1  # of a heading
    kind: str = "body"  # body | heading | caption | footnote | table | title | furniture


@dataclass
class _Builder:
    page: int
    text: list = field(default_factory=list)
    x0: float = math.inf
    x1: float = -math.inf
    top: float = -math.inf
    bottom: float = math.inf
    base: float = 0.0
    base_size: float = 0.0
    sizes: Counter = field(default_factory=Counter)
    bold: int = 0
    chars: int = 0
    first_size: float = 0.0
    glyphs: list = field(default_factory=list)  # (size, baseline) of each entry of text; None for a space

    def add(self, ch: str, left: float, right: float, bottom: float, top: float, base: float, size: float, bold: bool) -> None:
        if not self.chars:
            self.first_size = size
        if size > self.base_size * 1.15 or not self.chars:
            self.base, self.base_size = base, size
        self.text.append(ch)
        self.glyphs.append((size, base))
        self.x0, self.x1 = min(self.x0, left), max(self.x1, right)
        self.top, self.bottom = max(self.top, top), min(self.bottom, bottom)
        self.sizes[round(size * 2) / 2] += 1
        self.bold += bold
        self.chars += 1

    def space(self) -> None:
        if self.text and self.text[-1] != " ":
            self.text.append(" ")
            self.glyphs.append(None)

    def line(self) -> _Line:
        size = self.sizes.most_common(1)[0][0]
        return _Line(
            page=self.page, text=_without_marks(self.text, self.glyphs, size).strip(), x0=self.x0, x1=self.x1,
            top=self.top, bottom=self.bottom, size=size, bold=self.bold / self.chars,
            first_small=self.first_size < 0.8 * size,
        )


_MARK_CHARS = set("0123456789*\u2020\u2021\u00a7\u00b6,")
_MARK_AFTER = set(".,;:!?)\u201d\u2019\"'")


def _without_marks(chars: list[str], glyphs: list, size: float) -> str:
    """The line's text without footnote marks: a raised, smaller run of digits
    or footnote symbols right after a word of two or more letters or after
    closing punctuation (`conferences1`, `symbols.3`), or opening the line
    (the mark in front of a footnote). Exponents stay: after a digit or a
    one-letter variable (`10^3`, `n^2`) a raised number is mathematics."""
    base = _line_base(glyphs, size)
    raised = [g is not None and g[0] < 0.8 * size and g[1] > base + 0.15 * size for g in glyphs]
    out: list[str] = []
    i = 0
    while i < len(chars):
        if not raised[i]:
            out.append(chars[i])
            i += 1
            continue
        j = i
        while j < len(chars) and raised[j]:
            j += 1
        run = "".join(chars[i:j])
        before = "".join(out).rstrip(" ") if not out or out[-1] == " " else "".join(out)
        glued = bool(out) and out[-1] != " "
        word = re.search(r"([^\W\d_]+)$", before) if glued else None
        mark = set(run) <= _MARK_CHARS and run.strip(",")
        if mark and (not before.strip() or (glued and ((word and len(word.group(1)) >= 2) or before[-1:] in _MARK_AFTER))):
            i = j  # dropped
            continue
        out.extend(chars[i:j])
        i = j
    return _join_surrogates("".join(out))


def _line_base(glyphs: list, size: float) -> float:
    """The baseline of the line's body-size characters."""
    bases = Counter(round(g[1], 1) for g in glyphs if g is not None and abs(g[0] - size) <= 0.15 * size)
    if not bases:
        bases = Counter(round(g[1], 1) for g in glyphs if g is not None)
    return bases.most_common(1)[0][0] if bases else 0.0


def _join_surrogates(text: str) -> str:
    """PDFium gives a character beyond the BMP (mathematical letters) as two
    UTF-16 halves; a lone half becomes U+FFFD."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def read_pdf(path: Path, password: str | None = None) -> Extracted:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path), password=password)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == 4:  # FPDF_ERR_PASSWORD
            hint = "the password is wrong" if password else "pass --password or set LONGSUM_PDF_PASSWORD"
            raise ReaderError(f"{path}: the PDF is encrypted ({hint})") from None
        if code == 5:
            raise ReaderError(f"{path}: the PDF uses an unsupported security handler (encrypted)") from None
        raise ReaderError(f"{path}: not a readable PDF (corrupt or truncated: {_reason(exc)})") from None
    try:
        n_pages = len(pdf)
        if n_pages == 0:
            raise ReaderError(f"{path}: the PDF has no pages")
        lines: list[_Line] = []
        sizes: list[tuple[float, float]] = []
        empty_pages = []
        for index in range(n_pages):
            try:
                page = pdf[index]
            except pdfium.PdfiumError as exc:
                raise ReaderError(f"{path}: page {index + 1} cannot be read (corrupt PDF: {_reason(exc)})") from None
            try:
                box = _page_box(page)
                width, height = box[2] - box[0], box[3] - box[1]
                textpage = page.get_textpage()
                try:
                    page_lines = _page_lines(textpage, index, box)
                finally:
                    textpage.close()
            finally:
                page.close()
            if not page_lines:
                empty_pages.append(index + 1)
            lines.extend(page_lines)
            sizes.append((width, height))
        metadata = _metadata(pdf)
    finally:
        pdf.close()
    if not any(line.text for line in lines):
        raise ReaderError(f"{path}: the PDF has no text layer; OCR is not supported (scanned pages?)")
    blocks, title = _layout(lines, sizes)
    starts: list[int] = []
    text, headings = join_blocks([(kind, body, level) for kind, body, level, _ in blocks], starts)
    info = {"pages_without_text": empty_pages} if empty_pages else {}
    info["page_starts"] = page_starts([page for *_, page in blocks], starts, n_pages)
    title = metadata.get("Title") or title
    return Extracted(
        text=text, format="pdf", extractor="pypdfium2",
        extractor_version=f"{package_version('pypdfium2')} (pdfium {_pdfium_version()})",
        headings=headings, title=title or None, pages=n_pages,
        metadata={**info, **{k.lower(): v for k, v in metadata.items() if k in ("Author", "Creator", "Producer")}},
    )


def page_starts(pages: list[int], starts: list[int], n_pages: int) -> list[int]:
    """Where each page begins in the text (page p, from 1, at `[p - 1]`): the first paragraph
    that starts on it or later. A paragraph that runs on to the next page counts on the page
    it starts on."""
    first: dict[int, int] = {}
    for page, start in zip(pages, starts):
        first[page] = min(start, first.get(page, start))
    out, begin = [0] * n_pages, max(starts, default=0)
    for page in reversed(range(n_pages)):
        begin = min(begin, first.get(page, begin))
        out[page] = begin
    out[0] = 0
    for page in range(1, n_pages):  # a float set after its paragraph: keep the starts in order
        out[page] = max(out[page], out[page - 1])
    return out


def _reason(exc: Exception) -> str:
    match = re.search(r"PDFium: ([^)]*)", str(exc))
    return match.group(1).strip().rstrip(".") if match else str(exc).splitlines()[0][:120]


def _pdfium_version() -> str:
    try:
        import pypdfium2

        return str(pypdfium2.PDFIUM_INFO).split("@")[0]
    except Exception:  # noqa: BLE001 - a version label is never worth a failure
        return "unknown"


def _metadata(pdf) -> dict:
    try:
        return {k: " ".join(v.split()) for k, v in pdf.get_metadata_dict().items() if v and v.strip()}
    except Exception:  # noqa: BLE001 - broken info dictionaries are common and harmless
        return {}


# --- 1. characters -> lines ------------------------------------------------------


def _page_box(page) -> tuple[float, float, float, float]:
    """The visible page in user space (left, bottom, right, top): pages whose
    box does not start at 0,0 exist, and character positions are in that space."""
    import pypdfium2.raw as pdfium_c

    rect = pdfium_c.FS_RECTF()
    if pdfium_c.FPDF_GetPageBoundingBox(page.raw, ctypes.byref(rect)) and rect.right > rect.left and rect.top > rect.bottom:
        return rect.left, rect.bottom, rect.right, rect.top
    width, height = page.get_size()
    return 0.0, 0.0, width, height


def _page_lines(textpage, page_index: int, box: tuple[float, float, float, float]) -> list[_Line]:
    """Characters into lines, in coordinates relative to the page box's lower left corner."""
    import pypdfium2.raw as pdfium_c

    offset_x, offset_y = box[0], box[1]
    width, height = box[2] - box[0], box[3] - box[1]
    handle = textpage.raw
    count = pdfium_c.FPDFText_CountChars(handle)
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    origin_x, origin_y = ctypes.c_double(), ctypes.c_double()
    builders: list[_Builder] = []
    current: _Builder | None = None
    space = False
    last_right = 0.0
    for index in range(count):
        code = pdfium_c.FPDFText_GetUnicode(handle, index)
        if pdfium_c.FPDFText_IsGenerated(handle, index) or code in (9, 10, 13, 32, 0xA0):
            space = True
            continue
        angle = pdfium_c.FPDFText_GetCharAngle(handle, index)
        if angle > 0.05 and abs(angle - 2 * math.pi) > 0.05:
            continue  # rotated text: margin stamps, axis labels
        size = pdfium_c.FPDFText_GetFontSize(handle, index)
        if not pdfium_c.FPDFText_GetCharBox(handle, index, left, right, bottom, top):
            continue
        pdfium_c.FPDFText_GetCharOrigin(handle, index, origin_x, origin_y)
        x0, x1, base = left.value - offset_x, right.value - offset_x, origin_y.value - offset_y
        if x1 < 0 or x0 > width or base < 0 or base > height:
            continue  # outside the page: hidden text
        if code == 0xFFFE:
            code = 2
        ch = chr(code) if code < 0x110000 else "\ufffd"
        bold = pdfium_c.FPDFText_GetFontWeight(handle, index) >= 600
        if current is not None and current.chars:
            ref = max(current.base_size, 1.0)
            small = size < 0.85 * ref and abs(base - current.base) < 0.75 * ref
            # a footnote's own mark, raised in front of its first word: the line goes on after it
            after_mark = (current.chars <= 3 and size > 1.15 * ref and 0 < current.base - base < 0.75 * size
                          and -0.5 * size < x0 - last_right < size)
            same_line = abs(base - current.base) <= 0.45 * max(ref, size) or small or after_mark
            if not same_line or x0 < last_right - max(size, ref) * 1.5:
                current = None
            elif x0 - last_right > 1.1 * max(ref, size):
                current = None  # a wide gap: gutter, line-number margin or table column
        if current is None:
            current = _Builder(page=page_index)
            builders.append(current)
            space = False
        elif space:
            current.space()
        space = False
        current.add(ch, x0, x1, bottom.value - offset_y, top.value - offset_y, base, size, bold)
        last_right = x1
    return [line for line in (b.line() for b in builders if b.chars) if line.text]


# --- 2.-6. layout -----------------------------------------------------------------


def _layout(lines: list[_Line], sizes: list[tuple[float, float]]) -> tuple[list[tuple[str, str, int, int]], str | None]:
    n_pages = len(sizes)
    _drop_line_numbers(lines)
    _drop_furniture(lines, sizes)
    lines = [line for line in lines if line.kind != "furniture"]
    body_size = _body_size(lines)
    ordered: list[_Line] = []
    for page in range(n_pages):
        page_lines = [line for line in lines if line.page == page]
        if page_lines:
            ordered.extend(_reading_order(page_lines, sizes[page][0]))
    title = _mark_title(ordered, body_size)
    _mark_headings(ordered, body_size)
    blocks = _blocks(ordered)
    _mark_floats(blocks, body_size)
    return _paragraphs(blocks, _vocabulary(ordered)), title


def _drop_line_numbers(lines: list[_Line]) -> None:
    """Review copies number their lines in the margins: many short numbers on
    one page lined up at the same x."""
    by_page: dict[int, list[_Line]] = {}
    for line in lines:
        if line.text.isdigit() and len(line.text) <= 4:
            by_page.setdefault(line.page, []).append(line)
    for numbers in by_page.values():
        columns = Counter(round(line.x1 / 6) for line in numbers)
        for key, count in columns.items():
            if count >= 8:
                for line in numbers:
                    if abs(round(line.x1 / 6) - key) <= 1:
                        line.kind = "furniture"


def _drop_furniture(lines: list[_Line], sizes: list[tuple[float, float]]) -> None:
    """Running headers and footers: text near the top or bottom edge that
    recurs (digits aside) on many pages; lone page numbers there."""
    n_pages = len(sizes)
    candidates: list[tuple[_Line, str]] = []
    for line in lines:
        if line.kind == "furniture":
            continue
        height = sizes[line.page][1]
        if line.bottom > height * 0.90 or line.top < height * 0.08:
            candidates.append((line, re.sub(r"\d+", "#", line.text.lower()).strip()))
    pages_with = Counter()
    for key in {(line.page, key) for line, key in candidates}:
        pages_with[key[1]] += 1
    # even- and odd-page headers each recur on half the pages: from five pages on, two pages
    # are not enough (a table's top row, "output", can open two pages)
    needed = max(2 if n_pages < 5 else 3, 0.3 * n_pages)
    for line, key in candidates:
        repeated = n_pages >= 2 and pages_with[key] >= needed
        if repeated or _PAGE_NUMBER.match(line.text):
            line.kind = "furniture"


def _body_size(lines: list[_Line]) -> float:
    weights = Counter()
    for line in lines:
        weights[line.size] += len(line.text)
    return weights.most_common(1)[0][0] if weights else 10.0


def _reading_order(lines: list[_Line], width: float) -> list[_Line]:
    gutter = _gutter(lines, width)
    if gutter is None:
        return _rows(lines, "S")
    left, right, spanning = [], [], []
    for line in lines:
        if line.x0 < gutter - 2 and line.x1 > gutter + 2:
            spanning.append(line)
        elif (line.x0 + line.x1) / 2 < gutter:
            left.append(line)
        else:
            right.append(line)
    # A full-width table's cells fall on both sides of the gutter: rows of three or more
    # pieces, several in a row, are one spanning line each.
    # (Its cells are short, and its rows stand clear of the text's outer edges, as a centred table's do.)
    text_left, text_right = min(ln.x0 for ln in lines), max(ln.x1 for ln in lines)
    column_width = gutter - text_left
    table_rows = [row for row in _visual_rows(lines) if len(row) >= 3
                  and all(ln.x1 - ln.x0 < 0.6 * column_width for ln in row)
                  and row[0].x0 > text_left + 3 * row[0].size and row[-1].x1 < text_right - 3 * row[-1].size
                  and min(ln.x0 + ln.x1 for ln in row) < 2 * gutter < max(ln.x0 + ln.x1 for ln in row)]
    for row in table_rows:
        size = max(ln.size for ln in row)
        if any(other is not row and abs(other[0].top - row[0].top) < 2.5 * size for other in table_rows):
            for ln in row:
                for side in (left, right, spanning):
                    if any(ln is other for other in side):
                        side[:] = [other for other in side if other is not ln]
            spanning.append(_merge_row(row))
    # The short last line of a full-width caption sits in one column: it still spans.
    for line in sorted(left + right, key=lambda ln: -ln.top):
        above = [sp for sp in spanning if 0 <= sp.bottom - line.top < 0.75 * line.size
                 and abs(sp.x0 - line.x0) < 2 and abs(sp.size - line.size) < 0.5]
        if above:
            spanning.append(line)
            (left if line in left else right).remove(line)
    # Full-width lines cut the page into bands; each band is read left column first.
    cuts = sorted({round(line.top, 1) for line in spanning}, reverse=True)
    ordered: list[_Line] = []
    done: set[int] = set()
    upper = math.inf
    for cut in cuts + [-math.inf]:
        band = lambda col: [ln for ln in col if cut < (ln.top + ln.bottom) / 2 <= upper]  # noqa: E731
        for column, name in ((left, "L"), (right, "R")):
            members = [ln for ln in band(column) if id(ln) not in done]
            done.update(map(id, members))
            ordered.extend(_rows(members, name))
        here = [ln for ln in spanning if round(ln.top, 1) == cut and id(ln) not in done]
        done.update(map(id, here))
        ordered.extend(_rows(here, "S"))
        upper = cut
    return ordered


def _gutter(lines: list[_Line], width: float) -> float | None:
    """The x of the gap between two columns, if the page has two."""
    wide = [ln for ln in lines if ln.x1 - ln.x0 > width * 0.12]
    if len(wide) < 8:
        return None
    best = None
    for step in range(int(width * 0.30), int(width * 0.70), 2):
        x = float(step)
        cross = sum(1 for ln in wide if ln.x0 < x - 2 and ln.x1 > x + 2)
        lefts = sum(1 for ln in wide if ln.x1 <= x)
        rights = sum(1 for ln in wide if ln.x0 >= x)
        if lefts >= 4 and rights >= 4 and cross <= 0.2 * len(wide):
            score = (cross, abs(x - width / 2))
            if best is None or score < best[0]:
                best = (score, x)
    return best[1] if best else None


def _visual_rows(lines: list[_Line]) -> list[list[_Line]]:
    """Lines that share a visual row (they overlap vertically), top to bottom, each row left to right."""
    rows: list[list[_Line]] = []
    for line in sorted(lines, key=lambda ln: (-ln.top, ln.x0)):
        if rows:
            ref = rows[-1][0]
            overlap = min(ref.top, line.top) - max(ref.bottom, line.bottom)
            if overlap > 0.5 * min(ref.top - ref.bottom, line.top - line.bottom):
                rows[-1].append(line)
                continue
        rows.append([line])
    for row in rows:
        row.sort(key=lambda ln: ln.x0)
    return rows


def _merge_row(row: list[_Line]) -> _Line:
    first = row[0]
    if len(row) == 1:
        return first
    sizes = Counter()
    for ln in row:
        sizes[ln.size] += len(ln.text)
    return _Line(
        page=first.page, text=" ".join(ln.text for ln in row), x0=first.x0, x1=max(ln.x1 for ln in row),
        top=max(ln.top for ln in row), bottom=min(ln.bottom for ln in row), size=sizes.most_common(1)[0][0],
        bold=sum(ln.bold * len(ln.text) for ln in row) / max(1, sum(len(ln.text) for ln in row)),
        first_small=first.first_small, segments=sum(ln.segments for ln in row),
    )


def _rows(lines: list[_Line], column: str) -> list[_Line]:
    """Lines of one column top to bottom; pieces of one visual row (table
    cells, words split at a wide space) joined left to right."""
    merged = []
    for row in _visual_rows(lines):
        line = _merge_row(row)
        line.column = column
        merged.append(line)
    return merged


def _mark_title(lines: list[_Line], body_size: float) -> str | None:
    first_page = [ln for ln in lines if ln.page == 0]
    if not first_page:
        return None
    largest = max(ln.size for ln in first_page)
    if largest < body_size * 1.25:
        return None
    title_lines = []
    for line in first_page:
        if line.size == largest:
            line.kind = "title"
            title_lines.append(line.text)
        elif title_lines:
            break
    return " ".join(title_lines) or None


def _heading_level(line: _Line, body_size: float) -> int | None:
    text = line.text.strip()
    if len(text) > 110 or line.kind != "body" or _CAPTION.match(text):
        return None
    emphasised = line.bold > 0.8 or line.size > body_size * 1.1
    named = text.lower().rstrip(":. ") in _NAMED_HEADINGS
    if named and (emphasised or text.isupper()):
        return 1
    if _CHAPTER.match(text) and len(text.split()) <= 8 and (emphasised or text.isupper()):
        return 1
    match = _NUMBERED_HEADING.match(text)
    if match and emphasised and not _TERMINAL.search(text.rstrip(".")) and len(text.split()) <= 14:
        title = match.group("title")
        if sum(ch.isalpha() for ch in title) >= 3:
            return 1 + match.group("num").count(".")
    return None


def _mark_headings(lines: list[_Line], body_size: float) -> None:
    for line in lines:
        level = _heading_level(line, body_size)
        if level is not None:
            line.kind = "heading"
            line.level = level


@dataclass
class _Block:
    lines: list[_Line]
    kind: str = "body"

    @property
    def first(self) -> _Line:
        return self.lines[0]


def _blocks(lines: list[_Line]) -> list[_Block]:
    """Runs of lines that sit together: same page and column, normal leading,
    similar size. Headings and the title stand alone."""
    blocks: list[_Block] = []
    for line in lines:
        if blocks:
            block = blocks[-1]
            prev = block.lines[-1]
            gap = prev.bottom - line.top
            together = (
                line.kind == prev.kind == "body"
                and line.page == prev.page and line.column == prev.column
                and -0.2 * line.size < gap < 0.75 * max(line.size, prev.size)
                and abs(line.size - prev.size) <= 0.12 * max(line.size, prev.size)
            ) or (line.kind == prev.kind == "title" and line.page == prev.page) or (
                # a heading broken over two lines
                prev.kind == "heading" and line.kind == "body" and line.bold > 0.8 and len(block.lines) == 1
                and line.page == prev.page and line.column == prev.column and abs(line.size - prev.size) < 0.5
                and 0 <= gap < 0.75 * line.size
            )
            if together:
                block.lines.append(line)
                continue
        blocks.append(_Block([line], kind=line.kind))
    return blocks


def _mark_floats(blocks: list[_Block], body_size: float) -> None:
    """Captions, footnotes and tables leave the text flow."""
    for i, block in enumerate(blocks):
        if block.kind != "body":
            continue
        first = block.first
        if _CAPTION.match(first.text):
            block.kind = "caption"

        elif sum(1 for ln in block.lines if ln.segments >= 3) >= max(2, 0.6 * len(block.lines)) or (
                sum(1 for ln in block.lines if ln.segments >= 2) >= max(3, 0.6 * len(block.lines))
                and any(ln.segments >= 3 for ln in block.lines)):
            block.kind = "table"  # cells: several pieces a row
        elif first.size < body_size * 0.93 and (first.first_small or first.text[:1] in "*\u2020\u2021\u00a7\u00b6"):
            # a footnote sits below the body text of its column on the same page
            above = [b for b in blocks[:i] if b.first.page == first.page and b.first.column == first.column
                     and b.kind == "body" and b.first.size >= body_size * 0.95]
            if above and all(b.lines[-1].bottom > first.top for b in above):
                block.kind = "footnote"
    # labels inside a figure: scraps of a few words on a page that has a figure caption
    figure_pages = {b.first.page for b in blocks if b.kind == "caption" and b.first.text[:3].lower() == "fig"}
    for block in blocks:
        if block.kind == "body" and block.first.page in figure_pages and _scraps(block):
            block.kind = "figure"
    # a footnote that runs on into the next block (a new mark, or the next column) is still a footnote
    for prev, block in zip(blocks, blocks[1:]):
        if prev.kind == "footnote" and block.kind == "body" and block.first.page == prev.first.page \
                and block.first.column == prev.first.column and block.first.size < body_size * 0.93:
            block.kind = "footnote"


_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
# English hyphenates these prefixes whatever word follows (self-references, quasi-linear)
_HYPHEN_PREFIXES = {"self", "quasi"}


@dataclass
class _Vocabulary:
    """What the document itself says about its words, for deciding a line-end
    hyphen: compounds it writes with a hyphen inside a line (web-based), and
    words it writes whole (attention), neither counting the pieces of a word
    broken at a line end."""
    hyphenated: set = field(default_factory=set)
    words: set = field(default_factory=set)


def _vocabulary(lines: list[_Line]) -> _Vocabulary:
    vocabulary = _Vocabulary()
    broken = False  # the previous line ended in a hyphen: this one starts with the rest of a word
    for line in lines:
        tokens = _WORD.findall(line.text)
        ends_broken = line.text.endswith((HYPHEN_MARK, "-", "\u2010"))
        for index, token in enumerate(tokens):
            if (index == 0 and broken) or (index == len(tokens) - 1 and ends_broken):
                continue
            token = token.lower()
            if "-" in token:
                parts = token.split("-")
                vocabulary.hyphenated.update(f"{a}-{b}" for a, b in zip(parts, parts[1:]))
            else:
                vocabulary.words.add(token)
        broken = ends_broken
    return vocabulary


def _paragraphs(blocks: list[_Block], vocabulary: _Vocabulary) -> list[tuple[str, str, int, int]]:
    """(kind, text, heading level, the page it starts on) of each paragraph, in reading order."""
    out: list[tuple[str, str, int, int]] = []
    floats: list[tuple[str, str, int, int]] = []
    para: list[_Line] = []
    edges = _column_edges(blocks)
    references = False  # in a reference list, entries are told apart by their hanging indent

    def close() -> None:
        if para:
            out.append(("text", _join_lines(para, vocabulary), 0, para[0].page))
            para.clear()
        out.extend(floats)
        floats.clear()

    for block in blocks:
        if block.kind in ("caption", "footnote", "table", "figure"):
            floats.append(("text", _join_lines(block.lines, vocabulary), 0, block.first.page))
            continue
        if block.kind == "heading":
            close()
            references = _REFERENCES.match(block.first.text) is not None
            out.append(("heading", _join_lines(block.lines, vocabulary), block.first.level, block.first.page))
            continue
        if block.kind == "title":
            close()
            out.append(("text", _join_lines(block.lines, vocabulary), 0, block.first.page))
            continue
        left, right = _block_edges(block, edges)
        hanging = references or _hanging(block, left)
        for i, line in enumerate(block.lines):
            if _BULLET.match(line.text) or not para:
                starts = True
            elif i == 0:  # the first line of a block: after a gap, a float, or in the next column or page
                prev = para[-1]
                column_left, column_right = edges.get((line.page, line.column), (line.x0, line.x1))
                if hanging:
                    starts = not _indented(line, column_left)
                elif _BULLET.match(para[0].text) and line.page == para[0].page and line.column == para[0].column \
                        and line.x0 < para[0].x0 - 0.3 * line.size:
                    starts = True  # a line left of the bullet ends the list, whatever the item ended with
                elif not _TERMINAL.search(prev.text) or line.text[:1].islower():
                    starts = False  # the sentence goes on (a sentence never starts in lower case)
                else:
                    prev_right = edges.get((prev.page, prev.column), (prev.x0, prev.x1))[1]
                    starts = prev.x1 < prev_right - 2.5 * prev.size or _indented(line, column_left)
            else:
                prev = block.lines[i - 1]
                if hanging:
                    starts = not _indented(line, left)
                elif _BULLET.match(para[0].text):
                    # the wrapped lines of a list item sit right of its bullet; a line left of it ends the list
                    starts = line.x0 < para[0].x0 - 0.3 * line.size
                elif line.text[:1].islower():
                    starts = False  # a sentence never starts in lower case, indented or not
                else:
                    short = prev.x1 < right - 2.5 * prev.size and _TERMINAL.search(prev.text)
                    # a first-line indent after a flush line
                    starts = (_indented(line, left) and not _indented(prev, left, 0.3)) or bool(short)
            if starts and para:
                close()
            para.append(line)
    close()
    return out


def _column_edges(blocks: list[_Block]) -> dict[tuple[int, str], tuple[float, float]]:
    """Left and right edge of the text in each column of each page."""
    xs: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    for block in blocks:
        if block.kind != "body":
            continue
        for line in block.lines:
            lefts, rights = xs.setdefault((line.page, line.column), ([], []))
            lefts.append(line.x0)
            rights.append(line.x1)
    edges = {}
    for key, (lefts, rights) in xs.items():
        lefts.sort()
        rights.sort()
        edges[key] = (lefts[len(lefts) // 10], rights[(len(rights) * 9) // 10])
    return edges


def _block_edges(block: _Block, edges) -> tuple[float, float]:
    """Where this block's lines start and end: its own edges when it has
    enough lines (an abstract is narrower than its column), else the column's."""
    column = edges.get((block.first.page, block.first.column), (block.first.x0, block.first.x1))
    if len(block.lines) < 3:
        return column
    lefts = sorted(ln.x0 for ln in block.lines)
    rights = sorted(ln.x1 for ln in block.lines)
    return lefts[len(lefts) // 10], rights[(len(rights) * 9) // 10]


def _scraps(block: _Block) -> bool:
    return sum(len(ln.text.split()) for ln in block.lines) <= 20 and all(
        len(ln.text.split()) <= 4 and not _TERMINAL.search(ln.text) for ln in block.lines)


def _indented(line: _Line, left: float, ems: float = 0.6) -> bool:
    return line.x0 > left + ems * line.size


def _hanging(block: _Block, left: float) -> bool:
    """A reference list: each entry's first line out, the rest indented."""
    if len(block.lines) < 2 or _indented(block.first, left):
        return False
    rest = block.lines[1:]
    return all(_indented(ln, left) for ln in rest) and max(ln.x0 for ln in rest) - min(ln.x0 for ln in rest) < 2


def _join_lines(lines: list[_Line], vocabulary: _Vocabulary) -> str:
    text = ""
    for line in lines:
        piece = line.text
        if not text:
            text = piece
            continue
        if text.endswith((HYPHEN_MARK, "-", "\u2010")) and piece[:1].isalnum():
            if text[-2:-1] in (" ", ""):
                text = f"{text[:-1]}- {piece}"  # a dash standing alone
            elif _keeps_hyphen(text[:-1], piece, vocabulary):
                text = text[:-1] + "-" + piece
            else:
                text = text[:-1] + piece
        else:
            text = f"{text} {piece}"
    text = text.replace(HYPHEN_MARK, "-")
    return " ".join(clean_inline(text).split())


def _keeps_hyphen(before: str, after: str, vocabulary: _Vocabulary) -> bool:
    """Whether the hyphen that ends `before` (the text up to it) belongs to the
    word, or only broke it at the line end.

    A number after it keeps it (ACL-2008). Then the document decides: a
    compound it writes with the hyphen inside a line keeps it, a word it
    writes whole is joined. Undecided, the hyphen stays in a word that is
    already a compound (state-of-the-art), after an acronym or a capital
    (ACL-related, Anglo-Saxon) and after prefixes English always hyphenates
    (self-); else the word is joined (instruc-tions)."""
    if after[:1].isdigit():
        return True
    head = re.search(r"([^\W\d_]+)$", before)
    tail = re.match(r"[^\W\d_]+", after)
    if not head or not tail:
        return True
    first, second = head.group(1), tail.group(0)
    if f"{first}-{second}".lower() in vocabulary.hyphenated:
        return True
    if (first + second).lower() in vocabulary.words:
        return False
    in_compound = before[:head.start()].endswith(("-", HYPHEN_MARK)) or after[tail.end():tail.end() + 1] in ("-", "\u2010")
    acronym = any(ch.isupper() for ch in first[1:]) or not second[0].islower()
    return in_compound or acronym or first.lower() in _HYPHEN_PREFIXES
