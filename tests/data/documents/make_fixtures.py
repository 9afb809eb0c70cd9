"""Build the small PDF, EPUB and HTML fixtures in this folder from the
public-domain text of ../books/doyle_scandal_in_bohemia.txt.

    .venv/bin/python tests/data/documents/make_fixtures.py

Needs reportlab (BSD) for the PDFs; the EPUBs are written with zipfile and
the HTML by hand. Output is deterministic (reportlab's invariant mode), so
re-running it changes nothing unless this script changes. Each PDF comes
with a `.json` of what a reader should find in it (the paragraphs in reading
order, the sections, the words the layout hyphenated, the page furniture).
"""

from __future__ import annotations

import html
import json
import re
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORY = HERE.parent / "books" / "doyle_scandal_in_bohemia.txt"
HEADER = "Proceedings of the Workshop on Reproducible Tests 2026"
STAMP = "arXiv:2601.00001v1 [cs.CL] 1 Jan 2026"


def story() -> dict[str, list[str]]:
    """Chapter title -> paragraphs (lines unwrapped) of A Scandal in Bohemia."""
    text = STORY.read_text(encoding="utf-8")
    chapters: dict[str, list[str]] = {}
    current = None
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(block.split())
        if re.fullmatch(r"[IVX]+\.", block):
            current = block
            chapters[current] = []
        elif current and block:
            chapters[current].append(block)
    return chapters


# --- PDF: a two-column paper with page furniture ---------------------------------


def two_column_pdf(path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen import canvas

    paragraphs = story()["I."]
    plan = [
        ("title", "A Scandal in Bohemia: A Test Paper"), ("authors", "Arthur Conan Doyle"),
        ("heading", "Abstract"), ("para", paragraphs[0]),
        ("heading", "1 Introduction"), ("para", paragraphs[1]), ("para", paragraphs[2]), ("para", paragraphs[3]),
        ("heading", "2 Method"), ("para", paragraphs[4]),
        ("item", "\u2022 A man who first finds himself master of his own establishment, with all the home-centred "
                 "interests which rise up around him."),
        ("item", "\u2022 A keen desire to see Holmes again, and to know how he was employing his extraordinary powers."),
        ("item", "\u2022 The official police, who had abandoned as hopeless the singular tragedy of the Atkinson brothers."),
        ("para", paragraphs[5]),
        ("heading", "2.1 Data"), ("para", paragraphs[6]), ("para", paragraphs[7]), ("para", paragraphs[8]),
        ("heading", "3 Results"), ("para", paragraphs[9]), ("para", paragraphs[10]), ("para", paragraphs[11]),
        ("heading", "References"),
        ("ref", "Arthur Conan Doyle. 1891. A Scandal in Bohemia. The Strand Magazine, 2(1):61-75, London."),
        ("ref", "John H. Watson. 1888. Reminiscences of John H. Watson, M.D., late of the Army Medical Department."),
        ("ref", "Sherlock Holmes. 1887. Upon the Distinction between the Ashes of the Various Tobaccoes."),
    ]
    footnote = "The lodgings at 221B Baker Street, where the story begins."
    caption = "Figure 1: The sitting-room at Baker Street, drawn from memory."
    width, height = A4
    columns = [(60.0, 285.0), (310.0, 535.0)]
    top, bottom = 770.0, 90.0
    font, size, leading = "Times-Roman", 10.0, 12.0
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    pdf.setTitle("")  # the reader should find the title on the page
    state = {"page": 1, "col": 0, "y": top, "line_no": 1, "footnote_done": False, "figure_done": False}
    hyphenated: list[str] = []

    def furniture() -> None:
        pdf.setFont("Times-Italic", 9)
        pdf.drawCentredString(width / 2, 805, HEADER)
        pdf.setFont("Times-Roman", 9)
        pdf.drawCentredString(width / 2, 40, str(state["page"]))
        if state["page"] == 1:  # a preprint server's stamp, rotated up the left margin
            pdf.saveState()
            pdf.translate(22, 300)
            pdf.rotate(90)
            pdf.setFont("Times-Roman", 14)
            pdf.drawString(0, 0, STAMP)
            pdf.restoreState()

    def new_column() -> None:
        if state["col"] == 0:
            state["col"], state["y"] = 1, state["column_top"]
        else:
            pdf.showPage()
            state["page"] += 1
            furniture()
            state["col"], state["y"], state["column_top"] = 0, top, top

    def emit(text: str, x_offset: float = 0.0, fnt: str = font, sz: float = size, lead: float = leading) -> None:
        if state["y"] < bottom + (40 if state["page"] == 1 and state["col"] == 0 else 0):
            new_column()
        if state["page"] == 1 and state["col"] == 1 and state["y"] < 420 and not state["figure_done"]:
            # a figure in the middle of the right column, interrupting a paragraph
            state["figure_done"] = True
            pdf.rect(320, state["y"] - 60, 200, 60)
            state["y"] -= 74
            pdf.setFont("Times-Roman", 9)
            pdf.drawString(310, state["y"], caption)
            state["y"] -= 20
        x = columns[state["col"]][0] + x_offset
        pdf.setFont(fnt, sz)
        pdf.drawString(x, state["y"], text)
        # review-copy line numbers in the outer margins
        pdf.setFont("Helvetica", 7)
        number = f"{state['line_no']:03d}"
        if state["col"] == 0:
            pdf.drawRightString(42, state["y"], number)
        else:
            pdf.drawString(553, state["y"], number)
        state["line_no"] += 1
        state["y"] -= lead

    def wrap(text: str, first_indent: float, indent: float, fnt: str, sz: float) -> list[tuple[str, float]]:
        words = text.split()
        lines: list[tuple[str, float]] = []
        line, offset = "", first_indent
        limit = lambda off: columns[0][1] - columns[0][0] - off  # noqa: E731
        while words:
            word = words.pop(0)
            candidate = f"{line} {word}".strip()
            if stringWidth(candidate, fnt, sz) <= limit(offset):
                line = candidate
                continue
            # hyphenate plain words that do not fit, as TeX would
            core = re.match(r"^([A-Za-z]{7,})([,.;:!?]*)$", word)
            if core and line:
                letters = core.group(1)
                for k in range(len(letters) - 3, 2, -1):
                    head = f"{line} {letters[:k]}-"
                    if stringWidth(head, fnt, sz) <= limit(offset):
                        lines.append((head, offset))
                        hyphenated.append(letters)
                        words.insert(0, letters[k:] + core.group(2))
                        line, offset = "", indent
                        break
                else:
                    lines.append((line, offset))
                    line, offset = word, indent
                continue
            if line:
                lines.append((line, offset))
            line, offset = word, indent
        if line:
            lines.append((line, offset))
        return lines

    furniture()
    pdf.setFont("Times-Bold", 16)
    pdf.drawCentredString(width / 2, 770, plan[0][1])
    pdf.setFont("Times-Roman", 11)
    pdf.drawCentredString(width / 2, 750, plan[1][1])
    state["y"] = state["column_top"] = 715.0
    first_after_heading = True
    for kind, text in plan[2:]:
        if kind == "heading":
            if state["y"] < bottom + 60:
                new_column()
            state["y"] -= 6
            emit(text, fnt="Times-Bold", sz=12, lead=16)
            first_after_heading = True
        elif kind == "para":
            for line, offset in wrap(text, 0 if first_after_heading else 12, 0, font, size):
                emit(line, offset)
            first_after_heading = False
            if state["page"] == 1 and state["col"] == 0 and not state["footnote_done"]:
                state["footnote_done"] = True
                y = state["y"]
                pdf.setFont("Times-Roman", 6)
                pdf.drawString(60, 104, "1")
                pdf.setFont("Times-Roman", 8)
                pdf.drawString(64, 101, footnote)
                state["y"] = y
        elif kind == "item":  # a bulleted list: wrapped lines sit right of the bullet
            for line, offset in wrap(text, 8, 17, font, size):
                emit(line, offset)
            first_after_heading = True
        elif kind == "ref":
            for line, offset in wrap(text, 0, 12, "Times-Roman", 9):
                emit(line, offset, fnt="Times-Roman", sz=9, lead=11)
            state["y"] -= 3
    pdf.showPage()
    pdf.save()
    expected = {
        "title": plan[0][1],
        "sections": [text for kind, text in plan if kind == "heading"],
        "paragraphs": [text for kind, text in plan if kind in ("para", "item", "ref")],
        "references": [text for kind, text in plan if kind == "ref"],
        "hyphenated": sorted(set(hyphenated)),
        "header": HEADER, "stamp": STAMP, "footnote": footnote, "caption": caption, "pages": state["page"],
    }
    path.with_suffix(".json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")


def encrypted_pdf(path: Path) -> None:
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    encryption = pdfencrypt.StandardEncryption("sesame", ownerPassword="owner-sesame", strength=128)
    pdf = canvas.Canvas(str(path), encrypt=encryption, invariant=1)
    pdf.setFont("Times-Roman", 12)
    pdf.drawString(72, 720, story()["I."][0][:80])
    pdf.showPage()
    pdf.save()


def scanned_pdf(path: Path) -> None:
    """Pages that are pictures only, as a scanner makes them: no text layer."""
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), invariant=1)
    for page in range(2):
        pdf.setFillGray(0.85)
        pdf.rect(60, 80, 475, 680, fill=1, stroke=0)
        pdf.setFillGray(0.2)
        for row in range(40):  # strokes where lines of print would be
            pdf.rect(72, 740 - row * 16, 440 - (row * 37 + page * 11) % 90, 7, fill=1, stroke=0)
        pdf.showPage()
    pdf.save()


# --- EPUB ---------------------------------------------------------------------------

GUTENBERG_HEADER = (
    "The Project Gutenberg eBook of A Scandal in Bohemia, by Arthur Conan Doyle",
    "This eBook is for the use of anyone anywhere in the United States and most other parts of the world at no cost.",
    "Title: A Scandal in Bohemia", "Author: Arthur Conan Doyle", "Release Date: [EBook #1661]",
    "*** START OF THE PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***",
)
GUTENBERG_FOOTER = (
    "*** END OF THE PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***",
    "Updated editions will replace the previous one--the old editions will be renamed.",
    "START: FULL LICENSE",
    "THE FULL PROJECT GUTENBERG LICENSE PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK",
    "To protect the Project Gutenberg mission of promoting the free distribution of electronic works, "
    "by using or distributing this work you agree to comply with all the terms of the Full Project Gutenberg License.",
)


def _xhtml(title: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" lang="en">\n'
        f"<head><title>{html.escape(title)}</title><link rel=\"stylesheet\" href=\"style.css\"/></head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _paragraphs(paragraphs: list[str]) -> str:
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _write_epub(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        # the mimetype comes first and uncompressed, as the EPUB spec asks
        info = zipfile.ZipInfo("mimetype", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(info, "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)


CONTAINER = (
    '<?xml version="1.0"?>\n<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
    "</container>\n"
)


def epub3(path: Path) -> None:
    """EPUB 3: navigation document with toc and landmarks, a cover page, a
    Gutenberg header section and licence page, three chapters."""
    chapters = story()
    files = {"META-INF/container.xml": CONTAINER, "OEBPS/style.css": "p { text-indent: 1em; }\n"}
    manifest = ['<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>',
                '<item id="css" href="style.css" media-type="text/css"/>',
                '<item id="cover" href="cover.xhtml" media-type="application/xhtml+xml"/>']
    spine = ['<itemref idref="cover"/>', '<itemref idref="nav"/>']
    toc = []
    files["OEBPS/cover.xhtml"] = _xhtml("Cover", '<div class="cover"><h1>A Scandal in Bohemia</h1>'
                                        "<p>Cover illustration by Sidney Paget</p></div>")
    for n, (title, paragraphs) in enumerate(chapters.items(), 1):
        name = f"chapter{n}.xhtml"
        header = ""
        if n == 1:
            header = ('<section class="pg-boilerplate pgheader" id="pg-header">'
                      + "".join(f"<p>{html.escape(line)}</p>" for line in GUTENBERG_HEADER) + "</section>\n"
                      + "<h1>A SCANDAL IN BOHEMIA</h1>\n")
        files[f"OEBPS/{name}"] = _xhtml(title, f'{header}<section id="c{n}"><h2 id="h{n}">{title}</h2>\n'
                                        f"{_paragraphs(paragraphs)}</section>")
        manifest.append(f'<item id="ch{n}" href="{name}" media-type="application/xhtml+xml"/>')
        spine.append(f'<itemref idref="ch{n}"/>')
        toc.append(f'<li><a href="{name}#h{n}">{title}</a></li>')
    files["OEBPS/license.xhtml"] = _xhtml("License", '<section class="pg-boilerplate pgheader" id="pg-footer">'
                                          + "".join(f"<p>{html.escape(line)}</p>" for line in GUTENBERG_FOOTER)
                                          + "</section>")
    manifest.append('<item id="license" href="license.xhtml" media-type="application/xhtml+xml"/>')
    spine.append('<itemref idref="license"/>')
    files["OEBPS/nav.xhtml"] = _xhtml("Contents", (
        '<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>' + "".join(toc) + "</ol></nav>\n"
        '<nav epub:type="landmarks" hidden=""><ol><li><a epub:type="cover" href="cover.xhtml">Cover</a></li>'
        '<li><a epub:type="bodymatter" href="chapter1.xhtml">Start</a></li></ol></nav>'))
    files["OEBPS/content.opf"] = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">\n'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">urn:test:scandal</dc:identifier>'
        "<dc:title>A Scandal in Bohemia</dc:title><dc:creator>Arthur Conan Doyle</dc:creator>"
        "<dc:language>en</dc:language></metadata>\n"
        f"<manifest>{''.join(manifest)}</manifest>\n<spine>{''.join(spine)}</spine>\n</package>\n"
    )
    _write_epub(path, files)


def epub2(path: Path) -> None:
    """EPUB 2 as Gutenberg's older EpubMaker wrote it: toc.ncx, a plain-div
    header with the START marker and a contents list in the first file, the
    END marker and licence in a back-matter file."""
    chapters = story()
    files = {"META-INF/container.xml": CONTAINER}
    manifest = ['<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>']
    spine = []
    points = []
    contents = "".join(f'<p class="toc"><a href="part{n}.html#link{n}">{t}</a></p>'
                       for n, t in enumerate(chapters, 1))
    for n, (title, paragraphs) in enumerate(chapters.items(), 1):
        name = f"part{n}.html"
        head = ""
        if n == 1:
            head = ('<div class="pgmonospaced pgheader">' + "<br/>".join(html.escape(x) for x in GUTENBERG_HEADER)
                    + "<br/><br/>Produced by Volunteers of the Test Suite<br/></div>\n"
                    + f"<h1>A SCANDAL IN BOHEMIA</h1>\n<blockquote><p>CONTENTS</p>{contents}</blockquote>\n")
        files[f"OEBPS/{name}"] = _xhtml(title, f'{head}<a id="link{n}"></a><h2>{title}</h2>\n{_paragraphs(paragraphs)}')
        manifest.append(f'<item id="p{n}" href="{name}" media-type="application/xhtml+xml"/>')
        spine.append(f'<itemref idref="p{n}" linear="yes"/>')
        points.append(f'<navPoint id="np{n}" playOrder="{n}"><navLabel><text>{title}</text></navLabel>'
                      f'<content src="{name}#link{n}"/></navPoint>')
    files["OEBPS/bm.html"] = _xhtml("More", '<h2>About Project Gutenberg</h2><div class="pgheader">'
                                    + "<br/>".join(html.escape(x) for x in GUTENBERG_FOOTER) + "</div>")
    manifest.append('<item id="bm" href="bm.html" media-type="application/xhtml+xml"/>')
    spine.append('<itemref idref="bm" linear="yes"/>')
    files["OEBPS/toc.ncx"] = (
        '<?xml version="1.0" encoding="utf-8"?>\n<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">'
        f"<docTitle><text>A Scandal in Bohemia</text></docTitle><navMap>{''.join(points)}"
        '<navPoint id="more" playOrder="9"><navLabel><text>More Info</text></navLabel><content src="bm.html"/>'
        "</navPoint></navMap></ncx>\n"
    )
    files["OEBPS/content.opf"] = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="id">\n'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">urn:test:scandal2</dc:identifier>'
        "<dc:title>A Scandal in Bohemia</dc:title><dc:language>en</dc:language></metadata>\n"
        f'<manifest>{"".join(manifest)}</manifest>\n<spine toc="ncx">{"".join(spine)}</spine>\n</package>\n'
    )
    _write_epub(path, files)


# --- HTML -----------------------------------------------------------------------------


def article_html(path: Path) -> None:
    """A web page: the story as an article among navigation, a sidebar, a
    cookie banner, a footer, scripts and styles."""
    chapters = story()
    body = "".join(f"<h2>{title}</h2>\n{_paragraphs(paragraphs[:6])}\n" for title, paragraphs in chapters.items())
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>A Scandal in Bohemia | Example Press</title>
<style>body {{ font-family: serif; }} .hidden-style-marker {{ color: red; }}</style>
<script>var trackingCode = "TRACKING-SCRIPT-MARKER"; window.dataLayer = [];</script>
</head>
<body>
<div class="cookie-banner" id="cookie-consent"><p>We use cookies to improve your experience. Accept all cookies?</p>
<button>Accept</button></div>
<header class="site-header"><a href="/">Example Press</a>
<nav class="main-nav"><ul><li><a href="/">Home</a></li><li><a href="/books">Books</a></li>
<li><a href="/authors">Authors</a></li><li><a href="/subscribe">Subscribe to our newsletter</a></li></ul></nav>
</header>
<main>
<article>
<h1>A Scandal in Bohemia</h1>
<p class="byline">By Arthur Conan Doyle</p>
{body}
</article>
<aside class="sidebar"><h3>Related stories</h3><ul><li><a href="/red-headed-league">The Red-Headed League</a></li>
<li><a href="/boscombe">The Boscombe Valley Mystery</a></li></ul></aside>
</main>
<footer class="site-footer"><p>Copyright 2026 Example Press. All rights reserved. Privacy policy. Terms of use.</p>
</footer>
<script src="/static/app.js"></script>
</body>
</html>
"""
    path.write_text(page, encoding="utf-8")


def main() -> None:
    two_column_pdf(HERE / "two_column.pdf")
    encrypted_pdf(HERE / "encrypted.pdf")
    scanned_pdf(HERE / "scanned.pdf")
    epub3(HERE / "scandal_epub3.epub")
    epub2(HERE / "scandal_epub2.epub")
    article_html(HERE / "article.html")
    for path in sorted(HERE.iterdir()):
        if path.suffix != ".py":
            print(f"{path.name:28} {path.stat().st_size:>8,} bytes")


if __name__ == "__main__":
    main()
