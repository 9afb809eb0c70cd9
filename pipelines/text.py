"""Sentence, clause and paragraph boundaries, as character offsets.

Every splitter here returns pieces that concatenate back to the input exactly
(each piece keeps its trailing whitespace), because chunking must be lossless.
`sentences()` is the stripped view used for scoring and annotation.
"""

from __future__ import annotations

import re

# Titles and abbreviations after which a period does not end a sentence.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr st jr sr prof rev hon gen col capt lt sgt maj cmdr adm gov sen
    rep pres mt ft vs etc viz cf al ed eds vol vols no nos pp fig figs eq eqs sec
    ch chap approx dept inc ltd co corp est e.g i.e a.m p.m u.s u.k messrs mme mlle
    """.split()
)

_CLOSERS = "\"'”’)]»"
_OPENERS = "\"'“‘([«"

# A sentence ends at terminal punctuation, optionally followed by closing
# quotes/brackets, when whitespace follows and the next visible character can
# start a sentence.
_SENTENCE_END = re.compile(
    r"(?P<punct>[.!?…]+)(?P<close>[" + re.escape(_CLOSERS) + r"]*)(?P<space>\s+)"
    r"(?=[" + re.escape(_OPENERS) + r"]*[A-Z0-9À-ÖØ-Þ\u0400-\u042f\u0370-\u03ff]|[^\x00-\x7f])"
    # CJK full stops end a sentence with or without a following space.
    r"|(?P<cjk>[。！？]+)(?P<cjk_close>[」』”’）]*)\s*"
)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_CLAUSE_END = re.compile(r"[,;:—–)](?=\s)\s+|\s+(?=—|--)")
_WORD = re.compile(r"\S+\s*")
_TERMINAL = re.compile(r"[.!?…。！？][" + re.escape(_CLOSERS) + r"」』）]*\s*$")


def _is_abbreviation(text: str, dot_index: int) -> bool:
    """True when the period at dot_index closes an abbreviation or an initial."""
    start = dot_index
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:dot_index].lower().rstrip(".")
    if not word:
        return False
    if len(word) == 1 and word.isalpha():
        return True  # an initial such as "J. Smith" or "H. G. Wells"
    return word in _ABBREVIATIONS


def _split_at(text: str, ends: list[int]) -> list[str]:
    pieces, start = [], 0
    for end in ends:
        if start < end < len(text):
            pieces.append(text[start:end])
            start = end
    pieces.append(text[start:])
    return [p for p in pieces if p]


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs, each keeping the blank lines that follow it."""
    return _split_at(text, [m.end() for m in _PARAGRAPH_BREAK.finditer(text)])


def split_sentences(text: str) -> list[str]:
    """Sentences, each keeping its trailing whitespace; ''.join() gives text back."""
    ends = []
    for match in _SENTENCE_END.finditer(text):
        if match.group("punct") == "." and not match.group("close"):
            if _is_abbreviation(text, match.start("punct")):
                continue
        ends.append(match.end())
    for match in _PARAGRAPH_BREAK.finditer(text):
        ends.append(match.end())
    return _split_at(text, sorted(set(ends)))


def split_clauses(text: str) -> list[str]:
    """Clause-sized pieces split after commas, semicolons, colons and dashes."""
    return _split_at(text, [m.end() for m in _CLAUSE_END.finditer(text)])


def split_words(text: str) -> list[str]:
    """Words with their trailing whitespace (leading whitespace joins the first)."""
    pieces = _WORD.findall(text)
    if not pieces:
        return [text] if text else []
    lead = len(text) - len(text.lstrip())
    if lead:
        pieces[0] = text[:lead] + pieces[0]
    return pieces


def sentences(text: str) -> list[str]:
    """Non-empty sentences with surrounding whitespace and inner newlines collapsed."""
    out = []
    for piece in split_sentences(text):
        clean = " ".join(piece.split())
        if clean:
            out.append(clean)
    return out


def ends_with_sentence_end(text: str) -> bool:
    return bool(_TERMINAL.search(text.rstrip()))


_TERMINAL_RUN = re.compile(r"[.!?…。！？]+[" + re.escape(_CLOSERS) + r"」』）]*")


def trim_to_last_sentence(text: str) -> str:
    """The longest prefix of text that ends on a complete sentence ('' if none)."""
    text = text.rstrip()
    for match in reversed(list(_TERMINAL_RUN.finditer(text))):
        if match.group() == "." and _is_abbreviation(text, match.start()):
            continue
        return text[: match.end()]
    return ""


def count_words(text: str) -> int:
    return len(text.split())
