"""Seams the readers leave in text: hyphenation and footnote errors in PDFs
(counted against each PDF's LaTeX source), and the sections of a novel.

    .venv/bin/python bench/bench_reader_seams.py [--pdf-dir DIR] [--novel FILE] [-v]

PDFs: every `NAME.pdf` in --pdf-dir that has a `NAME.tex` beside it (by
default ../shared/data/pdf and tests/data/documents/acl: the ACL/NAACL
2016-2018 author instructions and their sources). The source gives the
words the paper really has (tests/extraction_recall.latex_text: comments,
floats, citations and command names stripped); a token of longsum's text
(split at white space, outer punctuation stripped) is counted as

- hyphen lost: not in the source, but it is with a hyphen put back at some
  place (`state-ofthe-art`, `selfreferences`);
- hyphen kept: not in the source, but it is with one of its hyphens taken
  out (`instruc-tions`);
- hyphen spaced: a hyphen followed by a space and a letter or digit where
  the source has the two pieces as one hyphenated word (`ACL- 2008`);
- glued footnote mark: not in the source, ends in 1-2 digits or a footnote
  symbol after a word the source has (`conferences1`, `symbols.3`);
- lowercase paragraph start: a paragraph (text between blank lines) that
  begins with a lower-case letter (not a URL or e-mail address, which a
  footnote may start with), i.e. a sentence resumed after a float or break
  cut it. Some are real (a table cell such as `natbib`), so this is
  an upper bound on sentences split by a footnote, table or caption.

Words the source itself never has (macro output such as \\LaTeX) cannot be
judged and are not counted. The novel's sections are counted as found by
`pipelines.documents.load_document`, with the wrapped ("CHAPTER 56. Of the
Less Erroneous Pictures of Whales, and the True / Pictures of Whaling
Scenes.") and unnumbered ("Epilogue") ones listed with -v.
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from pathlib import Path

from benchlib import LOCAL, SHARED, table
from extraction_recall import latex_text

_STRIP = "\"'“”‘’()[]{}<>.,;:!?*"
_MARK = re.compile(r"^(?P<word>.*?[^\W\d_])(?P<punct>[.,;:!?”’\")]*)(?P<mark>\d{1,2}|[*†‡§]+)$")


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text)
    return [t for t in (raw.strip(_STRIP) for raw in text.split()) if t]


def _vocabulary(tex: str) -> set[str]:
    # the preamble too: a title's \\thanks (credits) is text the PDF shows
    whole = "\\begin{document}" + tex.replace("\\begin{document}", " ").replace("\\end{document}", " ") + "\\end{document}"
    return {t.lower() for t in _tokens(latex_text(whole))}


def seam_counts(text: str, vocabulary: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {k: [] for k in ("hyphen lost", "hyphen kept", "hyphen spaced", "glued mark",
                                                   "lowercase start")}
    for token in _tokens(text):
        low = token.lower()
        if low in vocabulary or not re.search(r"[^\W\d_]", low):
            continue
        mark = _MARK.match(token)
        if mark and mark.group("word").lower() in vocabulary:
            found["glued mark"].append(token)
            continue
        if any(f"{low[:i]}-{low[i:]}" in vocabulary for i in range(1, len(low))):
            found["hyphen lost"].append(token)
        elif not low.endswith("-") and any(low[:i] + low[i + 1:] in vocabulary for i, ch in enumerate(low) if ch == "-"):
            found["hyphen kept"].append(token)
    for match in re.finditer(r"(\S+)- (\S+)", unicodedata.normalize("NFKC", text)):
        head, tail = match.group(1).strip(_STRIP).lower(), match.group(2).strip(_STRIP).lower()
        if f"{head}-{tail}" in vocabulary or head + tail in vocabulary:
            found["hyphen spaced"].append(match.group(0))
    for paragraph in text.split("\n\n"):
        first = paragraph.split(maxsplit=1)[0] if paragraph.strip() else ""
        if first[:1].islower() and not re.match(r"(?:https?://|www\.|\S+@\S+)", first):  # a URL or address may start one
            found["lowercase start"].append(paragraph.strip()[:40])
    return found


def pdf_rows(directories: list[Path], verbose: bool) -> list[list]:
    from pipelines.documents import load_document

    rows = []
    seen = set()
    for directory in directories:
        for pdf in sorted(directory.glob("*.pdf")):
            tex = pdf.with_suffix(".tex")
            if not tex.is_file() or pdf.name in seen:
                continue
            seen.add(pdf.name)
            document = load_document(pdf)
            counts = seam_counts(document.text, _vocabulary(tex.read_text(encoding="utf-8", errors="replace")))
            hyphen = sum(len(counts[k]) for k in ("hyphen lost", "hyphen kept", "hyphen spaced"))
            rows.append([pdf.name, document.pages, len(counts["hyphen lost"]), len(counts["hyphen kept"]),
                         len(counts["hyphen spaced"]), hyphen, len(counts["glued mark"]), len(counts["lowercase start"])])
            if verbose:
                for kind, items in counts.items():
                    if items:
                        print(f"  {pdf.name} {kind}: {items}")
    if rows:
        rows.append(["total", sum(r[1] for r in rows), *(sum(r[i] for r in rows) for i in range(2, 8))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdf-dir", type=Path, action="append",
                        help="folder of NAME.pdf + NAME.tex pairs (repeatable; default: shared data and tests/data)")
    parser.add_argument("--novel", type=Path, action="append", default=[],
                        help="a plain-text novel whose sections to count (e.g. Gutenberg's Moby-Dick, 2701-0.txt)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every error and section found")
    args = parser.parse_args()
    directories = args.pdf_dir or [SHARED / "pdf", LOCAL / "documents" / "acl"]
    rows = pdf_rows([d for d in directories if d.is_dir()], args.verbose)
    print(table(["pdf", "pages", "hyphen lost", "hyphen kept", "hyphen spaced", "hyphen errors", "glued marks",
                 "lowercase starts"], rows))
    if args.novel:
        from pipelines.documents import load_document

        novel_rows = []
        for path in args.novel:
            document = load_document(path)
            wrapped = [s.title for s in document.sections if len(s.title) > 60]
            unnumbered = [s.title for s in document.sections if not re.search(r"\d|\b[IVXLC]+\b", s.title)]
            novel_rows.append([path.name, len(document.sections), len({s.title for s in document.sections}),
                               len(wrapped), len(unnumbered)])
            if args.verbose:
                print(f"  {path.name} sections: {[s.title for s in document.sections]}")
        print()
        print(table(["novel", "sections", "distinct titles", "titles over 60 chars", "unnumbered"], novel_rows))


if __name__ == "__main__":
    main()
