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
        ("archive.txt", gzip.compress(b"hello world" * 100), "gzip"),
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
