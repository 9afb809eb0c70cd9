import gzip

import pytest

from pipelines.documents import DocumentError, load_document


def test_real_books_have_chapters(books):
    persuasion = load_document(books / "austen_persuasion.txt")
    assert persuasion.kind == "book"
    assert [s.title for s in persuasion.sections][:2] == ["Chapter 1", "Chapter 2"]
    assert len(persuasion.sections) == 24
    pride = load_document(books / "austen_prideprejudice.txt")
    assert len(pride.sections) == 61
    scandal = load_document(books / "doyle_scandal_in_bohemia.txt")
    assert [s.title for s in scandal.sections] == ["ADVENTURE I. A SCANDAL IN BOHEMIA", "I.", "II.", "III."]


def test_roman_numerals_and_chapter_words(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_text("CHAPTER I\n\nIt began.\n\nCHAPTER II. The Storm\n\nIt rained.\n\nXIV.\n\nI did.\n\nChapter Twenty-One\n\nEnd.\n")
    titles = [s.title for s in load_document(path).sections]
    assert titles == ["CHAPTER I", "CHAPTER II. The Storm", "XIV.", "Chapter Twenty-One"]


def test_moby_dick_chapters_whose_titles_wrap_and_the_epilogue_are_sections(books):
    document = load_document(books / "moby_dick_excerpt.txt")
    titles = [s.title for s in document.sections]
    assert titles == [
        "CHAPTER 55. Of the Monstrous Pictures of Whales.",
        "CHAPTER 56. Of the Less Erroneous Pictures of Whales, and the True Pictures of Whaling Scenes.",
        "CHAPTER 57. Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars.",
        "CHAPTER 58. Brit.",
        "CHAPTER 72. The Monkey-Rope.",
        "CHAPTER 73. Stubb and Flask kill a Right Whale; and Then Have a Talk over Him.",
        "CHAPTER 74. The Sperm Whale\u2019s Head\u2014Contrasted View.",
        "CHAPTER 135. The Chase.\u2014Third Day.",
        "Epilogue",
    ]  # and not the 136 entries of the table of contents before them
    for section in document.sections:
        assert document.text[section.start:].startswith(section.title.split()[0])
    assert document.text[document.sections[-1].start:].startswith("Epilogue\n\n\u201cAND I ONLY AM ESCAPED")


def test_prologue_preface_and_epilogue_but_not_a_wrapped_sentence(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_text("PREFACE\n\nA word first.\n\nPrologue.\n\nLong ago.\n\nCHAPTER I. The Start\n\nIt began.\n\n"
                    "CHAPTER II. The Storm\n\nIt rained.\n\nChapter three of the plan\nfailed at once.\n\n"
                    "CHAPTER III. A Title That Goes On\nOver Two Lines\n\nIt ended.\n\nEPILOGUE\n\nAfter.\n")
    titles = [s.title for s in load_document(path).sections]
    # a paragraph of prose that starts "Chapter three" is no heading: the book's headings say CHAPTER
    assert titles == ["PREFACE", "Prologue.", "CHAPTER I. The Start", "CHAPTER II. The Storm",
                      "CHAPTER III. A Title That Goes On Over Two Lines", "EPILOGUE"]


def test_encodings_are_decoded_and_newlines_normalised(tmp_path):
    text = "Caf\u00e9 cr\u00e8me \u2014 na\u00efve\r\nsecond line\rthird\n"
    cases = {
        "bom.txt": b"\xef\xbb\xbf" + text.encode("utf-8"),
        "utf16.txt": text.encode("utf-16"),
        "cp1252.txt": text.encode("cp1252"),
        "latin1.txt": "Caf\u00e9 cr\u00e8me na\u00efve \u00e0 la fran\u00e7aise, d\u00e9j\u00e0 vu.\n".encode("latin-1") * 20,
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    for name in ("bom.txt", "utf16.txt", "cp1252.txt"):
        doc = load_document(tmp_path / name)
        assert doc.text == "Caf\u00e9 cr\u00e8me \u2014 na\u00efve\nsecond line\nthird\n", name
        assert "\ufeff" not in doc.text
    assert "d\u00e9j\u00e0 vu" in load_document(tmp_path / "latin1.txt").text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"  \n\t\n  ", "only whitespace"),
        ("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "PNG image"),
        ("archive.txt", gzip.compress(b"hello world" * 100, mtime=0), "gzip"),
        ("nul.txt", b"abc\x00def" * 10, "NUL bytes"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentError, match=message):
        load_document(path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        load_document(tmp_path / "nope.txt")
    with pytest.raises(DocumentError, match="directory"):
        load_document(tmp_path)


def test_papers_markdown_and_latex(tmp_path):
    md = tmp_path / "paper.md"
    md.write_text("# Title\n\nAbstract text.\n\n## 1 Introduction\n\nWords.\n\n### 1.1 Scope\n\nMore.\n")
    doc = load_document(md)
    assert doc.kind == "paper"
    assert [(s.title, s.level) for s in doc.sections] == [("Title", 1), ("1 Introduction", 2), ("1.1 Scope", 3)]
    tex = tmp_path / "paper.tex"
    tex.write_text("\\section{Introduction}\nText.\n\\subsection*{Setup}\nMore.\n\\section{Results}\n")
    assert [s.title for s in load_document(tex).sections] == ["Introduction", "Setup", "Results"]
    txt = tmp_path / "notes.txt"
    txt.write_text("Abstract\n\nWe study things.\n\nIntroduction\n\nThings matter.\n\nReferences\n\n[1] A.\n")
    assert load_document(txt).kind == "paper"


def test_code_structure_python_and_fallback(tmp_path):
    py = tmp_path / "mod.py"
    py.write_text("import os\n\n@decorator\ndef top():\n    pass\n\nclass Box:\n    def open(self):\n        return 1\n")
    doc = load_document(py)
    assert doc.kind == "code" and doc.language == "python"
    assert [(s.title, s.kind) for s in doc.sections] == [("top", "function"), ("Box", "class"), ("Box.open", "function")]
    assert doc.text[doc.sections[0].start:].startswith("@decorator")
    js = tmp_path / "app.js"
    js.write_text("export async function load(url) {\n  return 1;\n}\nclass Store {\n}\n")
    assert [s.title for s in load_document(js).sections] == ["load", "Store"]
    broken = tmp_path / "broken.py"
    broken.write_text("def ok():\n    pass\n\ndef broken(:\n")
    assert [s.title for s in load_document(broken).sections] == ["ok", "broken"]


# --- PDF, EPUB, HTML and Gutenberg text (issue 12) ----------------------------------

import json  # noqa: E402
import shutil  # noqa: E402

from clitools import assert_one_line_error, run  # noqa: E402
from conftest import DATA  # noqa: E402

FIXTURES = DATA / "documents"

GUTENBERG_TXT = """\ufeffThe Project Gutenberg EBook of A Scandal in Bohemia, by Arthur Conan Doyle\r
\r
This eBook is for the use of anyone anywhere at no cost and with\r
almost no restrictions whatsoever.\r
\r
Release Date: November 29, 2002 [EBook #1661]\r
\r
*** START OF THIS PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***\r
\r
\r
\r
\r
Produced by an anonymous Project Gutenberg volunteer and Jose Menendez\r
\r
\r
\r
{story}\r
\r
\r
\r
\r
End of the Project Gutenberg EBook of A Scandal in Bohemia, by Arthur Conan Doyle\r
\r
*** END OF THIS PROJECT GUTENBERG EBOOK A SCANDAL IN BOHEMIA ***\r
\r
***** This file should be named 1661.txt or 1661.zip *****\r
\r
START: FULL LICENSE\r
\r
THE FULL PROJECT GUTENBERG LICENSE\r
PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK\r
"""


def test_gutenberg_header_and_licence_are_cut_from_plain_text(tmp_path, scandal_text):
    path = tmp_path / "1661.txt"
    path.write_bytes(GUTENBERG_TXT.format(story=scandal_text.strip().replace("\n", "\r\n")).encode("utf-8"))
    doc = load_document(path)
    assert doc.text == scandal_text.strip() + "\n"
    assert doc.metadata["gutenberg"]["ebook"] == 1661
    assert doc.metadata["gutenberg"]["header_chars"] > 300 and doc.metadata["gutenberg"]["footer_chars"] > 200
    assert [s.title for s in doc.sections] == ["ADVENTURE I. A SCANDAL IN BOHEMIA", "I.", "II.", "III."]
    assert doc.format == "text" and doc.extractor == "longsum"
    plain = tmp_path / "plain.txt"  # no markers: nothing is cut
    plain.write_text(scandal_text)
    assert load_document(plain).text == scandal_text and load_document(plain).metadata == {}


def test_formats_are_detected_by_content(tmp_path):
    epub = tmp_path / "book.zip"
    shutil.copy(FIXTURES / "scandal_epub3.epub", epub)
    assert load_document(epub).format == "epub"
    pdf = tmp_path / "paper"
    shutil.copy(FIXTURES / "two_column.pdf", pdf)
    assert load_document(pdf).format == "pdf"
    import zipfile

    other = tmp_path / "data.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("a.txt", "hello " * 100)
    with pytest.raises(DocumentError, match="zip archive"):
        load_document(other)
    fake = tmp_path / "fake.epub"
    fake.write_text("not a zip at all\n" * 20)
    with pytest.raises(DocumentError, match="not a readable EPUB"):
        load_document(fake)


def test_documents_row_records_format_pages_and_extractor(store):
    from pipelines.runner import record_document

    for name in ("two_column.pdf", "scandal_epub2.epub", "article.html"):
        record_document(store, load_document(FIXTURES / name))
    record_document(store, load_document(DATA / "books" / "doyle_scandal_in_bohemia.txt"))
    rows = store.execute("SELECT format, pages, extractor, extractor_version, title, metadata FROM documents ORDER BY format")
    assert [r[:3] for r in rows] == [("epub", None, "zipfile+lxml"), ("html", None, "trafilatura"),
                                      ("pdf", 2, "pypdfium2"), ("text", None, "longsum")]
    assert all(r[3] for r in rows)
    assert rows[0][4] == "A Scandal in Bohemia" and rows[2][4] == "A Scandal in Bohemia: A Test Paper"
    assert json.loads(rows[0][5])["gutenberg"]["ebook"] == 1661


def test_text_command_prints_what_longsum_chunks(tmp_path, cli_env):
    from pipelines.chunking import chunk_text
    from pipelines.llm.tokenizers import count_cl100k

    for name in ("two_column.pdf", "scandal_epub3.epub", "article.html"):
        path = FIXTURES / name
        plain = run(["text", path], cli_env)
        assert plain.returncode == 0, plain.stderr
        data = run(["text", path, "--json"], cli_env)
        assert data.returncode == 0, data.stderr
        out = json.loads(data.stdout)
        assert set(out) >= {"format", "title", "pages", "extractor", "sections", "text"}
        assert out["text"] == plain.stdout == load_document(path).text
        chunks = chunk_text(out["text"], 256, count_cl100k, sorted({s["start"] for s in out["sections"]} - {0}))
        assert "".join(c.text for c in chunks) == out["text"]
        for section, following in zip(out["sections"], out["sections"][1:] + [None]):
            assert out["text"][section["start"]:].startswith(section["title"])
            assert section["end"] == (following["start"] if following else len(out["text"]))
    assert json.loads(run(["text", FIXTURES / "two_column.pdf", "--json"], cli_env).stdout)["pages"] == 2


def test_text_command_bad_files(tmp_path, cli_env):
    assert_one_line_error(run(["text", FIXTURES / "encrypted.pdf"], cli_env), "encrypted", "--password")
    opened = run(["text", FIXTURES / "encrypted.pdf", "--password", "sesame"], cli_env)
    assert opened.returncode == 0 and opened.stdout.startswith("To Sherlock Holmes")
    assert_one_line_error(run(["text", FIXTURES / "scanned.pdf"], cli_env), "no text layer; OCR is not supported")
    assert_one_line_error(run(["text", tmp_path / "missing.pdf"], cli_env), "no such file")
