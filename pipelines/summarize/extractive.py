"""A no-LLM summary: the text's most central, least redundant sentences.

One selection serves two callers: the extractive baseline (`--method
extractive`, over the whole document) and the salvage of an LLM step that
got no valid answer (over all of that step's input; see `salvage`).

* Units are sentences, read paragraph by paragraph, with a quotation that
  runs over several sentences kept whole (`"How so? How can it affect
  them?"` is one unit, not two halves of a speech), and a heading line above
  its text ("3.7 Results", "CHAPTER IV") split off it.
* Candidates are the units that read as sentences: MIN_SENTENCE_WORDS to
  MAX_SENTENCE_WORDS words, terminal punctuation at the end, neither in
  capitals nor in title case, and mostly words, not numbers (no headings,
  titles, captions without a full stop, or table rows flattened into a line),
  and none from a list of references. Narration comes before speech: while
  the units not mostly inside quotation marks hold NARRATION_FOR_BUDGETS
  times the budget, only they are candidates.
* Centrality is MEAD's centroid value (Radev et al. 2004): the weight, in
  the centroid of all candidates' TF-IDF vectors (each unit a document for
  the IDF; English function words left out), of each distinct term the unit
  holds. Redundancy is the largest cosine to a unit already chosen. Maximal
  marginal relevance picks greedily within the word budget; the chosen units
  come back in document order.

Lexical vectors, not sentence embeddings: the MiniLM baseline took about
1 GB and 2.5 minutes for a novel (bench/bench_extractive.py has both side by
side), and a salvage runs inside an LLM run, where loading torch for it
would cost more memory than the model.
"""

from __future__ import annotations

import re

from pipelines.summarize.common import SummaryRecord, tokens_for_words
from pipelines.text import count_words, split_paragraphs, split_sentences

# What the stored runs call this method (`runs.model` of an extractive run).
MODEL_NAME = "extractive:tfidf-centroid-mmr"
# Weight of centrality against redundancy in maximal marginal relevance.
MMR_LAMBDA = 0.7
MIN_SENTENCE_WORDS = 4
# Nor more than this: a long unit (a speech of many sentences) would eat a budget alone.
MAX_SENTENCE_WORDS = 60
# A candidate has at most this share of tokens with digits (a table row has more).
MAX_NUMERIC_SHARE = 0.25
# Narration before speech: units mostly inside quotation marks are left out
# while the rest holds this many times the budget (a characters' line is the
# text's content less often than the narrator's sentences are).
MAX_QUOTED_SHARE = 0.5
NARRATION_FOR_BUDGETS = 3
# A salvage keeps at most this share of its input's words: it must shorten.
SALVAGE_MAX_SHARE = 0.5

_TERM = re.compile(r"[^\W\d_]{2,}")
# English function words: frequent in every kind of sentence, so a centroid
# built on them finds the sentences richest in "not", "all" and "it" (other
# languages have only the IDF to weigh theirs down).
FUNCTION_WORDS = frozenset("""
    about above after again against all am an and any are as at be because been before being below between both
    but by can cannot could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how if in into is it its itself just me more most my myself no nor not now
    of off on once only or other ought our ours ourselves out over own same shall she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up upon
    very was we were what when where which while who whom whose why will with would yes yet you your yours
    yourself yourselves us ll ve re don didn doesn isn wasn weren won wouldn couldn shouldn
""".split())
_REFERENCES = re.compile(r"^(?:\d+\.?\s+)?(?:references|bibliography|works cited|literature cited)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^\d+(?:\.\d+)*\.?\s+[A-Z]")
_ENDS = re.compile(r"[.!?…。！？][\"'”’)\]»」』）]*$")


def select(text: str, words: int) -> str:
    """The central, non-redundant sentences of text, in document order, at
    most `words` words (see module doc)."""
    units = _units(text)
    candidates = _candidates(units)
    narration = [u for u in candidates if _quoted_share(u) <= MAX_QUOTED_SHARE]
    if sum(count_words(u) for u in narration) >= NARRATION_FOR_BUDGETS * words:
        candidates = narration
    if not candidates:  # nothing sentence-like (a list, a table): any unit will do
        candidates = [u for u in units if u] or ([" ".join(text.split())] if text.strip() else [])
    if not candidates:
        return ""
    chosen = _mmr(candidates, words)
    if not chosen:  # even the shortest sentence is over budget: the most central one's first words
        best = _mmr(candidates, 10**9, limit=1)[0]
        return " ".join(candidates[best].split()[:words])
    return " ".join(candidates[i] for i in sorted(chosen))


def salvage(text: str, words: int) -> str:
    """What a step with no valid answer keeps: a selection over all of its
    input within its budget, and never more than SALVAGE_MAX_SHARE of it."""
    return select(text, max(1, min(words, int(SALVAGE_MAX_SHARE * count_words(text)))))


def salvage_update(summary: str, text: str, words: int, chunks_before: int) -> str:
    """What an incremental update with no valid answer keeps: the running summary stands for
    `chunks_before` chunks and the new text for one, and each keeps that share of the budget (one
    selection over both would let the new chunk's many sentences crowd out the story so far)."""
    kept = select(summary, round(words * chunks_before / (chunks_before + 1))) if summary.strip() else ""
    added = salvage(text, max(1, words - count_words(kept)))
    return "\n\n".join(part for part in (kept, added) if part)


def extractive_summary(text: str, words: int, n_chunks: int = 1, count_tokens=None) -> SummaryRecord:
    summary = select(text, words)
    return SummaryRecord(
        level=0, idx=0, kind="extractive", text=summary, token_limit=tokens_for_words(words), word_limit=words,
        first_chunk=0, last_chunk=max(0, n_chunks - 1),
        n_tokens=count_tokens(summary) if count_tokens else 0, is_final=True,
    )


# -- units ----------------------------------------------------------------------


def _units(text: str) -> list[str]:
    """Sentences with whitespace collapsed; quotations and headings kept whole."""
    units: list[str] = []
    for paragraph in split_paragraphs(text):
        block: list[str] = []
        lines = paragraph.split("\n")
        for n, line in enumerate(lines):
            # A heading line between sentences (a PDF's "3.7 Results" above its text) is a unit of its own.
            if (_heading_line(line.strip()) and any(rest.strip() for rest in lines[n + 1:])
                    and (not block or _ENDS.search(block[-1].rstrip()))):
                units.extend(_sentences("\n".join(block)))
                units.append(" ".join(line.split()))
                block = []
            else:
                block.append(line)
        units.extend(_sentences("\n".join(block)))
    return [u for u in units if u]


def _sentences(block: str) -> list[str]:
    return _join_quotations([" ".join(p.split()) for p in split_sentences(block)]) if block.strip() else []


def _join_quotations(pieces: list[str]) -> list[str]:
    """Sentences of one paragraph, a quotation that spans several made one
    unit. A quotation left open to the paragraph's end (a story told or a
    letter quoted over many paragraphs) does not join: its sentences stay
    apart, and the first loses the quotation's opening mark."""
    opens = [_open_quotes(p) for p in pieces]
    out, i = [], 0
    while i < len(pieces):
        unit, depth, j = pieces[i], opens[i], i + 1
        if depth and _closes_later(opens, i, depth):
            while depth and j < len(pieces):
                unit, depth, j = f"{unit} {pieces[j]}", _balance(depth, opens[j]), j + 1
        elif depth and unit[:1] in ('"', "“") and unit.count('"') + unit.count("“") + unit.count("”") == 1:
            unit = unit[1:]  # the opening mark of a quotation that goes on past this paragraph
        out.append(unit)
        i = j
    return out


def _open_quotes(piece: str) -> tuple[int, int]:
    """(curly quotes opened minus closed, straight double quotes mod 2)."""
    return piece.count("“") - piece.count("”"), piece.count('"') % 2


def _balance(depth: tuple[int, int], more: tuple[int, int]) -> tuple[int, int] | None:
    curly, straight = depth[0] + more[0], (depth[1] + more[1]) % 2
    return (curly, straight) if curly > 0 or straight else None


def _closes_later(opens: list[tuple[int, int]], i: int, depth) -> bool:
    for later in opens[i + 1:]:
        depth = _balance(depth, later)
        if depth is None:
            return True
    return False


def _quoted_share(unit: str) -> float:
    """The share of the unit's characters inside double quotation marks."""
    inside, quoted = False, 0
    for c in unit:
        if c in '"“”':
            inside = (not inside) if c == '"' else (c == "“")
            continue
        quoted += inside
    return quoted / max(1, len(unit))


def _candidates(units: list[str]) -> list[str]:
    """The units that read as sentences, outside a list of references."""
    out, references = [], False
    for unit in units:
        if _heading_line(unit):
            references = bool(_REFERENCES.match(unit))
        elif not references and _reads_as_sentence(unit):
            out.append(unit)
    return out


def _heading_line(line: str) -> bool:
    """A short line with no sentence end, numbered or in capitals or title case ("3.2 Electronically-available
    resources", "CHAPTER IV", "Acknowledgments")."""
    if not line or len(line.split()) > 10 or _ENDS.search(line) or line.endswith((",", ";", ":", "-")):
        return False
    return bool(_NUMBERED.match(line)) or _capitals_or_title_case(line)


def _capitals_or_title_case(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return True
    long_words = [w for w in re.findall(r"[^\W\d_]+", text) if len(w) >= 4]
    return bool(long_words) and all(w[0].isupper() for w in long_words)


def _reads_as_sentence(unit: str) -> bool:
    """Words in a sentence: not a heading, a title (a reference's), a table row or a fragment."""
    tokens = unit.split()
    if not MIN_SENTENCE_WORDS <= len(tokens) <= MAX_SENTENCE_WORDS or not _ENDS.search(unit):
        return False
    if _capitals_or_title_case(unit):
        return False
    numeric = sum(1 for t in tokens if any(c.isdigit() for c in t))
    return numeric <= MAX_NUMERIC_SHARE * len(tokens)


# -- centrality and redundancy ----------------------------------------------------


def _mmr(units: list[str], words: int, limit: int | None = None) -> list[int]:
    """Indices of the units maximal marginal relevance picks within `words`."""
    import numpy as np

    rows, cols, weights = _tfidf(units)
    n = len(units)
    vocabulary = int(cols.max()) + 1 if len(cols) else 1
    centroid = np.bincount(cols, weights=weights, minlength=vocabulary).astype(float)  # bincount of nothing is int
    centroid /= np.linalg.norm(centroid) or 1.0
    # MEAD's centroid value: the centroid's weight of each distinct term the unit holds (a cosine
    # would crown "Come in!" said Holmes: the shorter, the purer the top term).
    centrality = np.bincount(rows, weights=centroid[cols], minlength=n).astype(float)
    centrality /= centrality.max() or 1.0
    lengths = np.array([count_words(u) for u in units])
    starts = np.searchsorted(rows, np.arange(n + 1))  # rows are sorted: unit i's entries are starts[i]:starts[i+1]

    chosen: list[int] = []
    redundancy = np.zeros(n)
    available = np.ones(n, dtype=bool)
    used = 0
    dense = np.zeros(vocabulary)
    while limit is None or len(chosen) < limit:
        fits = available & (used + lengths <= words)
        if not fits.any():
            break
        score = MMR_LAMBDA * centrality - (1 - MMR_LAMBDA) * redundancy
        best = int(np.argmax(np.where(fits, score, -np.inf)))
        chosen.append(best)
        used += int(lengths[best])
        available[best] = False
        span = slice(starts[best], starts[best + 1])
        dense[cols[span]] = weights[span]
        redundancy = np.maximum(redundancy, np.bincount(rows, weights=weights * dense[cols], minlength=n))
        dense[cols[span]] = 0.0
    return chosen


def _tfidf(units: list[str]):
    """Unit-length TF-IDF rows as coordinates (row, column, weight), rows ascending."""
    import numpy as np

    vocabulary: dict[str, int] = {}
    rows, cols, counts = [], [], []
    for i, unit in enumerate(units):
        terms: dict[int, int] = {}
        for term in _TERM.findall(unit.lower()):
            if term in FUNCTION_WORDS:
                continue
            column = vocabulary.setdefault(term, len(vocabulary))
            terms[column] = terms.get(column, 0) + 1
        rows.extend([i] * len(terms))
        cols.extend(terms)
        counts.extend(terms.values())
    rows_a = np.array(rows, dtype=np.int64)
    cols_a = np.array(cols, dtype=np.int64)
    tf = 1.0 + np.log(np.array(counts, dtype=np.float64))
    df = np.bincount(cols_a, minlength=len(vocabulary))
    # A term in every unit weighs nothing: it tells no unit from another.
    idf = np.log(len(units) / np.maximum(df, 1)) if len(vocabulary) else np.zeros(0)
    weights = tf * idf[cols_a] if len(cols_a) else np.zeros(0)
    norms = np.sqrt(np.bincount(rows_a, weights=weights ** 2, minlength=len(units)))
    weights = weights / np.where(norms[rows_a] > 0, norms[rows_a], 1.0) if len(weights) else weights
    return rows_a, cols_a, weights
