"""Recall of extracted text against a reference: the measure the PDF and
EPUB reader tests hold (and bench/bench_documents.py prints).

Words are alphabetic runs of three or more letters, lower-cased; recall
counts a reference item as found as often as it occurs in the candidate.
The 4-gram recall is over consecutive words, so it measures reading order.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

_DROP_ENVIRONMENTS = ("figure", "figure*", "table", "table*", "tabular", "tabular*", "equation", "equation*",
                      "align", "align*", "thebibliography")
_DROP_WITH_ARGUMENT = (
    "cite", "citep", "citet", "citealp", "citeauthor", "citeyear", "ref", "autoref", "cref", "Cref", "eqref", "label",
    "url", "includegraphics", "bibliography", "bibliographystyle", "usepackage", "vspace", "hspace", "setlength",
    "graphicspath", "babelfont", "babelprovide", "documentclass", "newcommand", "renewcommand", "input", "include",
)


def latex_text(tex: str) -> str:
    """The prose of a LaTeX document: body only, no comments, floats, citations
    or command names (a command's text argument is kept)."""
    tex = re.sub(r"(?<!\\)%[^\n]*", "", tex)
    body = tex.split(r"\begin{document}", 1)[-1].split(r"\end{document}", 1)[0]
    for env in _DROP_ENVIRONMENTS:
        name = re.escape(env)
        body = re.sub(rf"\\begin\{{{name}\}}.*?\\end\{{{name}\}}", " ", body, flags=re.S)
    commands = "|".join(_DROP_WITH_ARGUMENT)
    body = re.sub(rf"\\(?:{commands})\*?(?:\[[^\]]*\])*\{{[^}}]*\}}", " ", body)
    body = re.sub(r"\\href\{[^}]*\}", " ", body)  # the link's text stays, its target goes
    body = re.sub(r"\\(?:begin|end|foreignlanguage)\{[^}]*\}", " ", body)
    body = re.sub(r"\\[a-zA-Z@]+\*?(?:\[[^\]]*\])?", " ", body)
    body = re.sub(r"\\.", "", body)  # accents and escaped characters
    return body.replace("{", "").replace("}", "")


def words(text: str) -> list[str]:
    """Alphabetic words of three or more letters, lower-cased."""
    return re.findall(r"[^\W\d_]{3,}", unicodedata.normalize("NFKC", text).lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def recall(reference: list, candidate: list) -> float:
    """Share of the reference's items (with multiplicity) found in the candidate."""
    ref, cand = Counter(reference), Counter(candidate)
    return sum(min(count, cand[item]) for item, count in ref.items()) / max(1, sum(ref.values()))


def word_and_4gram_recall(reference_text: str, text: str) -> tuple[float, float]:
    ref, got = words(reference_text), words(text)
    return recall(ref, got), recall(ngrams(ref, 4), ngrams(got, 4))


def plain_pdfium_text(path: Path) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in pdf)
    finally:
        pdf.close()
