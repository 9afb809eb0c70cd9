"""HTML reading: the main text through trafilatura, headings as sections,
navigation/scripts/styles/footers out, Gutenberg HTML cut, and big pages
read in bounded memory (or refused with one line)."""

import re
import subprocess
import sys

import pytest
from conftest import BOOKS, DATA
from extraction_recall import recall, words
from peak_rss import PEAK_KIB_SOURCE

from pipelines.documents import DocumentError, load_document
from pipelines.readers import MAX_HTML_BYTES

FIXTURES = DATA / "documents"
STORY = (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")


def test_article_main_text_without_page_chrome():
    document = load_document(FIXTURES / "article.html")
    assert document.format == "html" and document.extractor == "trafilatura"
    assert document.title == "A Scandal in Bohemia"  # "| Example Press", the site, is not the page's title
    for chrome in ("TRACKING-SCRIPT-MARKER", "hidden-style-marker", "cookies", "Subscribe to our newsletter",
                   "Related stories", "All rights reserved", "Red-Headed League"):
        assert chrome not in document.text, chrome
    assert [s.title for s in document.sections] == ["A Scandal in Bohemia", "I.", "II.", "III."]
    assert [s.level for s in document.sections] == [1, 2, 2, 2]
    assert document.text.startswith("A Scandal in Bohemia\n\nI.\n\nTo Sherlock Holmes she is")  # the byline is page chrome to trafilatura
    assert recall(words(document.text), words(STORY)) >= 0.99  # everything it kept is the story's


def _gutenberg_page(chapters: int = 3, repeat: int = 1) -> str:
    paragraphs = [" ".join(p.split()) for p in STORY.split("\n\n")[2:40]]
    body = "".join(f"<h2>Chapter {n}</h2>" + "".join(f"<p>{p}</p>" for p in paragraphs) for n in range(1, chapters + 1))
    return (
        "<!DOCTYPE html><html><head><title>The Project Gutenberg eBook of A Scandal in Bohemia</title>"
        "<style>p { margin: 0 }</style></head><body>"
        '<div class="pgheader"><p>The Project Gutenberg EBook of A Scandal in Bohemia, by Arthur Conan Doyle</p>'
        "<p>Release Date: [EBook #1661]</p>"
        "<p>*** START OF THIS PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***</p></div>"
        f"<h1>A SCANDAL IN BOHEMIA</h1>{body * repeat}"
        "<p>*** END OF THIS PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***</p>"
        "<p>THE FULL PROJECT GUTENBERG LICENSE PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK</p>"
        "<p>Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works</p>"
        "</body></html>"
    )


def test_gutenberg_html_book_keeps_its_chapters_and_loses_the_licence(tmp_path):
    path = tmp_path / "1661-h.htm"
    path.write_text(_gutenberg_page(), encoding="utf-8")
    document = load_document(path)
    assert "Gutenberg" not in document.text and "LICENSE" not in document.text
    assert document.text.startswith("A SCANDAL IN BOHEMIA\n\n")
    assert [s.title for s in document.sections] == ["A SCANDAL IN BOHEMIA", "Chapter 1", "Chapter 2", "Chapter 3"]
    assert document.metadata["gutenberg"]["ebook"] == 1661
    for section in document.sections:
        assert document.text[section.start:].startswith(section.title)


def test_html_is_recognised_by_content_without_an_extension(tmp_path):
    path = tmp_path / "saved_page"
    path.write_text((FIXTURES / "article.html").read_text(encoding="utf-8"), encoding="utf-8")
    document = load_document(path)
    assert document.format == "html" and "TRACKING-SCRIPT-MARKER" not in document.text
    for name in ("saved.txt", "notes.md"):  # a page saved under a text extension is still a page
        saved = tmp_path / name
        saved.write_text((FIXTURES / "article.html").read_text(encoding="utf-8"), encoding="utf-8")
        document = load_document(saved)
        assert document.format == "html" and "TRACKING-SCRIPT-MARKER" not in document.text, name
    doctype = tmp_path / "page.txt"
    doctype.write_text("<!DOCTYPE html><p>One paragraph of a page.</p>", encoding="utf-8")
    assert load_document(doctype).format == "html"
    template = tmp_path / "index.php"  # source code that starts like a page stays code
    template.write_text("<html><body><?php echo $title; ?></body></html>\n", encoding="utf-8")
    assert load_document(template).format == "text" and load_document(template).kind == "code"
    markdown = tmp_path / "notes.md"  # text that merely mentions a tag is text
    markdown.write_text("# Notes\n\nThe <html> element holds the page.\n", encoding="utf-8")
    assert load_document(markdown).format == "text"


def test_ligatures_soft_hyphens_and_odd_spaces_are_normalised(tmp_path):
    path = tmp_path / "typeset.html"
    path.write_text("<html><body><article><h1>Notes</h1>"
                    + "<p>We \ufb01nd the \ufb02ower in the \ufb01eld, e\ufb00ortless\u00a0and\u2009o\ufb03cial; "
                      "hy\u00adphen\u00adated words\u200b join.</p>" * 12 + "</article></body></html>", encoding="utf-8")
    text = load_document(path).text
    assert "We find the flower in the field, effortless and official; hyphenated words join." in text
    assert not re.search("[\ufb00-\ufb06\u00ad\u200b\u00a0\u2009]", text)


def test_legacy_encoded_page(tmp_path):
    path = tmp_path / "old.html"
    page = '<html><head><meta charset="windows-1252"></head><body><article><h1>Caf\u00e9</h1>' \
           + "<p>Le caf\u00e9 \u00e9tait plein \u2014 Fran\u00e7ois lisait un roman \u00e0 la fen\u00eatre.</p>" * 20 \
           + "</article></body></html>"
    path.write_bytes(page.encode("cp1252"))
    document = load_document(path)
    assert "Le caf\u00e9 \u00e9tait plein \u2014 Fran\u00e7ois" in document.text


@pytest.mark.slow
def test_twenty_megabyte_page_reads_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.html"
    path.write_text(_gutenberg_page(chapters=30, repeat=70), encoding="utf-8")
    size = path.stat().st_size
    assert size > 20 * 2**20
    script = (PEAK_KIB_SOURCE + "import json\nfrom pipelines.documents import load_document\n"
              f"d = load_document({str(path)!r})\n"
              "print(json.dumps([len(d.text), len(d.sections), d.extractor, d.text[:40],"
              " peak_kib()]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    n_chars, n_sections, extractor, start, peak_kib = eval(result.stdout)  # noqa: S307 - our own json list
    assert extractor == "lxml" and n_sections == 1 + 30 * 70 and start.startswith("A SCANDAL IN BOHEMIA")
    assert n_chars > 0.8 * size * 0.85
    assert peak_kib * 1024 < 20 * size, f"peak RSS {peak_kib / 1024:.0f} MiB for a {size / 2**20:.0f} MiB page"


def test_page_over_the_limit_is_refused_with_one_line(tmp_path):
    path = tmp_path / "enormous.html"
    with path.open("wb") as fh:
        fh.write(b"<html><body>")
        fh.seek(MAX_HTML_BYTES + 10)
        fh.write(b"</body></html>")
    with pytest.raises(DocumentError, match=r"MiB; longsum reads HTML up to \d+ MiB") as error:
        load_document(path)
    assert "\n" not in str(error.value)


def test_page_without_main_text_is_refused(tmp_path):
    path = tmp_path / "empty.html"
    path.write_text("<html><head><title>x</title><script>var a = 1;</script></head><body><nav><a href='/'>Home</a></nav>"
                    "</body></html>")
    with pytest.raises(DocumentError, match="no main text|no text") as refused:
        load_document(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    # The same page with a paragraph is read: its text, without the navigation or the script.
    story = "Holmes read the note twice before he handed it to Watson without a word. " * 4
    path.write_text(path.read_text().replace("</nav>", f"</nav><p>{story}</p>"))
    text = load_document(path).text
    assert "Holmes read the note twice" in text and "Home" not in text and "var a" not in text


def _documentation_page(generator: str) -> str:
    """A page as a documentation generator writes it: a permalink beside each
    heading, the site's name after the title."""
    link = {
        "sphinx": '<a class="headerlink" href="#{id}" title="Link to this heading">\u00b6</a>',
        "mkdocs": '<a class="headerlink" href="#{id}" title="Permanent link">#</a>',
        "github": '<a class="anchor" aria-hidden="true" href="#{id}"></a>',
    }[generator]
    body = "".join(
        f'<section id="s{n}"><h2>{n}. Section {n}{link.format(id=f"s{n}")}</h2>'
        + "".join(f"<p>Paragraph {k} of section {n} explains how the parser reads its input, "
                  f"which options it takes and what it returns to the caller.</p>" for k in range(1, 6))
        + "</section>" for n in range(1, 4))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            "<title>3. Data model \u2014 Python 3.12.0 documentation</title></head><body>"
            "<nav><a href='/'>Home</a> <a href='/library'>Library</a></nav>"
            f'<div role="main"><h1>3. Data model{link.format(id="data-model")}</h1>{body}</div>'
            "<footer>\u00a9 Copyright 2001-2024, Python Software Foundation.</footer></body></html>")


@pytest.mark.parametrize("generator", ["sphinx", "mkdocs", "github"])
def test_documentation_page_loses_permalinks_and_site_name_and_is_no_book(tmp_path, generator):
    path = tmp_path / "datamodel.html"
    path.write_text(_documentation_page(generator), encoding="utf-8")
    document = load_document(path)
    assert "\u00b6" not in document.text and not re.search(r"(?m)#$|\d#", document.text)
    assert [s.title for s in document.sections] == ["3. Data model", "1. Section 1", "2. Section 2", "3. Section 3"]
    assert document.title == "3. Data model"
    assert document.kind == "paper"


def test_site_suffix_is_cut_from_the_title_without_a_heading_to_match(tmp_path):
    path = tmp_path / "post.html"
    paragraphs = "".join(f"<p>{p}</p>" for p in STORY.split("\n\n")[2:12])
    path.write_text(f"<html><head><title>Notes on a case | The Baker Street Blog</title>"
                    f"<meta property='og:site_name' content='The Baker Street Blog'></head>"
                    f"<body><article>{paragraphs}</article></body></html>", encoding="utf-8")
    assert load_document(path).title == "Notes on a case"


def test_binary_junk_named_html_is_refused_with_one_line(tmp_path):
    import random

    junk = tmp_path / "page.html"
    junk.write_bytes(random.Random(27).randbytes(20_000))
    with pytest.raises(DocumentError) as error:
        load_document(junk)
    message = str(error.value)
    assert message.startswith(str(junk)) and "not HTML" in message and "\n" not in message
    # control characters without NUL bytes: the same refusal, not lxml's "All strings must be XML compatible"
    noise = tmp_path / "noise.html"
    noise.write_bytes(bytes(random.Random(4).choice(range(1, 32)) for _ in range(5_000)))
    with pytest.raises(DocumentError, match="not HTML"):
        load_document(noise)


def test_whatever_a_reader_raises_becomes_one_line_naming_the_file(tmp_path, monkeypatch):
    import pipelines.documents as documents

    def broken(path, fmt, password=None):
        raise ValueError("All strings must be XML compatible:\nUnicode or ASCII")

    monkeypatch.setattr(documents, "read_file", broken)
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>Words.</p></body></html>", encoding="utf-8")
    with pytest.raises(DocumentError) as error:
        load_document(page)
    assert str(error.value) == f"{page}: cannot be read as HTML (All strings must be XML compatible: Unicode or ASCII)"
