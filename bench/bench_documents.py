"""How well longsum's readers recover a document's text, and how fast.

    .venv/bin/python bench/bench_documents.py

- PDF: ../shared/data/pdf/acl_lualatex.pdf against its LaTeX source
  (commands, comments, tables and figures stripped; alphabetic words of 3+
  letters): word recall and word-4-gram recall (reading order), for longsum's
  reader and for PDFium's plain text.
- EPUB: ../shared/data/epub/pg1342.epub against the plain-text novel: word
  recall, and the chapters found as sections.
- Extraction time per page (PDF) and per document, median of --repeat runs.

The recall functions (tests/extraction_recall.py) are what tests/test_readers_*.py
hold the readers to.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

from benchlib import LOCAL, SHARED, table
from extraction_recall import latex_text, plain_pdfium_text, word_and_4gram_recall

def timed(function, repeat: int):
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return result, statistics.median(seconds)


def main() -> None:
    from pipelines.documents import load_document

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per file; the median time is reported")
    parser.add_argument("--quick", action="store_true", help="one run per file")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    rows = []
    pdf, tex = SHARED / "pdf" / "acl_lualatex.pdf", SHARED / "pdf" / "acl_lualatex.tex"
    if pdf.is_file():
        reference = latex_text(tex.read_text(encoding="utf-8"))
        document, seconds = timed(lambda: load_document(pdf), repeat)
        plain, plain_seconds = timed(lambda: plain_pdfium_text(pdf), repeat)
        for name, text, secs in (("longsum (pypdfium2 + layout)", document.text, seconds),
                                 ("plain pdfium text", plain, plain_seconds)):
            word, gram = word_and_4gram_recall(reference, text)
            rows.append(["pdf", pdf.name, name, document.pages, f"{word:.3f}", f"{gram:.3f}",
                         len(document.sections) if text is document.text else "-",
                         f"{secs * 1000 / document.pages:.1f}", f"{secs:.2f}"])
    epub, novel = SHARED / "epub" / "pg1342.epub", SHARED / "books" / "austen_prideprejudice.txt"
    if epub.is_file():
        document, seconds = timed(lambda: load_document(epub), repeat)
        word, gram = word_and_4gram_recall(novel.read_text(encoding="utf-8"), document.text)
        chapters = sum(1 for s in document.sections if re.fullmatch(r"Chapter \d+", s.title))
        rows.append(["epub", epub.name, "longsum (zipfile + lxml)", "-", f"{word:.3f}", f"{gram:.3f}", chapters,
                     "-", f"{seconds:.2f}"])
    fixtures = LOCAL / "documents"
    story = (LOCAL / "books" / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    for name in ("two_column.pdf", "scandal_epub3.epub", "scandal_epub2.epub", "article.html"):
        path = fixtures / name
        document, seconds = timed(lambda: load_document(path), repeat)
        if path.suffix == ".pdf":
            expected = "\n\n".join(json.loads(path.with_suffix(".json").read_text())["paragraphs"])
        else:
            expected = story if path.suffix == ".epub" else None
        word, gram = word_and_4gram_recall(expected, document.text) if expected else (None, None)
        per_page = f"{seconds * 1000 / document.pages:.1f}" if document.pages else "-"
        rows.append([document.format, name, document.extractor, document.pages or "-",
                     f"{word:.3f}" if word is not None else "-", f"{gram:.3f}" if gram is not None else "-",
                     len(document.sections), per_page, f"{seconds:.2f}"])
    print(table(["format", "file", "reader", "pages", "word recall", "4-gram recall", "sections", "ms/page", "s"], rows))


if __name__ == "__main__":
    main()
