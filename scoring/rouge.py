"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (precision, recall, F), stemmed.

The numbers are rouge-score's (Google's reimplementation of ROUGE-1.5.5),
bit for bit: the same tokenizer and Porter stemmer, the same n-gram counting,
the same LCS tie-breaking for rougeLsum's union LCS, the same float
arithmetic. Two things are done differently, neither changing a number:

* Sentences are split before rougeLsum. rouge-score splits only on newlines,
  so a summary written as one paragraph silently gets rougeL for rougeLsum.
  `prepare()` splits both texts with `pipelines.text.sentences` and joins the
  sentences with "\\n", and the rouge-score reference and the fast path both
  score that prepared text.
* Speed. rouge-score's LCS is an O(n*m) table in pure Python (two 2,000-word
  texts: seconds; 5,000 words: ~20 s). `FastRouge` computes rougeL's LCS
  length with rapidfuzz's bit-parallel C++ LCS over token ids, and
  rougeLsum's union LCS with a vectorised (numpy) table per reference
  sentence against all candidate sentences at once, backtracking every
  candidate sentence in lock-step with rouge-score's exact tie-breaking
  (so the union of LCS positions, and hence the hits, are the same).
  Tokenization is memoised per text and per word (the Porter stemmer is the
  other slow part). `tests/test_rouge.py` proves the parity on real texts.

Non-ASCII text: rouge-score's tokenizer keeps only [a-z0-9], so "café" counts
as "caf", "Dvořák" as "dvo" and "k", and a Greek, Russian or Chinese summary
scores zero without a word of warning. longsum keeps rouge-score's tokenizer by default (numbers stay
comparable with published ones) but *detects* the loss: when more than
`NON_ASCII_WARN_SHARE` of a text's letters and digits would be dropped it
emits a `NonAsciiWarning`, and the share is stored in the score's config.
`tokenizer="unicode"` instead tokenizes so that non-ASCII text counts: accents
are folded (café -> cafe), any Unicode letter/digit run is a token, and each
CJK character is a token; on pure ASCII text it gives exactly rouge-score's
tokens.

Several references: every reference is scored, then `max` is rouge-score's
`score_multi` (per ROUGE type, the P/R/F of the reference with the highest F)
and `mean` is the element-wise mean over references.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from pipelines.text import sentences

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOKENIZERS = ("rouge-score", "unicode")
# Warn when more than this share of a text's letters/digits is dropped by
# rouge-score's ASCII-only tokenizer.
NON_ASCII_WARN_SHARE = 0.01


class NonAsciiWarning(UserWarning):
    """rouge-score's tokenizer drops non-ASCII letters: the score undercounts."""


@dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


# -- preparation and tokenization ------------------------------------------


def prepare(text: str) -> str:
    """One sentence per line (what rougeLsum needs), whitespace collapsed."""
    return "\n".join(sentences(text))


_ALNUM = re.compile(r"[^\W_]", re.UNICODE)
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")


def non_ascii_share(text: str) -> float:
    """Share of the text's letters and digits that rouge-score's tokenizer drops."""
    total = len(_ALNUM.findall(text))
    if not total:
        return 0.0
    return 1.0 - len(_ASCII_ALNUM.findall(text)) / total


class _MemoStemmer:
    """nltk's Porter stemmer, memoised per word (same output, far fewer calls)."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=200_000)(porter.PorterStemmer().stem)


@functools.lru_cache(maxsize=1)
def _stemmer() -> _MemoStemmer:
    return _MemoStemmer()


_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])")
_UNICODE_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_ASCII_TOKEN = re.compile(r"^[a-z0-9]+$")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class UnicodeTokenizer:
    """Tokens that count non-ASCII text; identical to rouge-score's on ASCII text.

    Has rouge-score's `tokenize()` interface, so `rouge_scorer.RougeScorer`
    accepts it too (the parity tests use that)."""

    def __init__(self, use_stemmer: bool = True):
        self.use_stemmer = use_stemmer

    def tokenize(self, text: str) -> list[str]:
        text = _CJK.sub(r" \1 ", _fold(text))
        tokens = _UNICODE_TOKEN.findall(text)
        if self.use_stemmer:
            stem = _stemmer().stem
            tokens = [stem(t) if len(t) > 3 and _ASCII_TOKEN.match(t) else t for t in tokens]
        return [t for t in tokens if t]


class RougeScoreTokenizer:
    """rouge-score's own tokenizer function with a memoised stemmer."""

    def __init__(self, use_stemmer: bool = True):
        self.use_stemmer = use_stemmer

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, _stemmer() if self.use_stemmer else None)


def make_tokenizer(name: str = "rouge-score", use_stemmer: bool = True):
    if name == "rouge-score":
        return RougeScoreTokenizer(use_stemmer)
    if name == "unicode":
        return UnicodeTokenizer(use_stemmer)
    raise ValueError(f"unknown ROUGE tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


# -- LCS kernels -------------------------------------------------------------


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence (rapidfuzz, bit-parallel C++)."""
    if not a or not b:
        return 0
    from rapidfuzz.distance import LCSseq

    return int(LCSseq.similarity(a, b))


_BITREV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def union_lcs_hits(ref_sents: list[list[int]], can_sents: list[list[int]]) -> int:
    """rouge-score's `_summary_level_lcs` hit count, bit-parallel.

    The candidate sentences sit side by side in one row of bits (Python
    ints), each behind an empty "slot" column that stops carries, so one
    bit-parallel LCS step (Allison-Dix / Hyyro: V' = (V + (V & M)) | (V & ~M),
    a zero bit marking a column where the row increments) fills the LCS
    table row of every candidate sentence at once.

    The backtrack must reproduce rouge-score's exact path (on a match go
    diagonal; else move left if t[i][j-1] > t[i-1][j]; else move up), since
    the union of LCS positions depends on it. Every step of a walk lowers the
    row except the left moves, so the walks of all candidate sentences are
    in the same row at once, one walker bit per sentence. Without a match,
    "move left" holds exactly where row i does not increment and row i
    exceeds row i-1 (t[i][j] - t[i-1][j] = 1); that difference is 1 between
    each column where row i increments and row i-1 does not (a rise) and the
    next column where row i-1 increments and row i does not (a fall), so the
    whole mask is (falls + sentence ends - rises) as integers. A run of left
    moves is a carry: with the bit order reversed, adding the walker bits to
    the keep-moving mask carries each walker to its first stop. Reference
    position i-1 is in the union LCS when any walker goes diagonal in row i.
    Cost per reference token: a few dozen big-integer operations.
    """
    if not ref_sents or not can_sents:
        return 0
    m = sum(map(len, ref_sents))
    n = sum(map(len, can_sents))
    if not m or not n:
        return 0
    # Bit g is column g: for each candidate sentence, a slot column, then its tokens.
    masks: dict[int, int] = {}
    tokens_mask = ends = 0
    last_cols = []
    g = 0
    for sent in can_sents:
        g += 1  # the slot
        for tok in sent:
            masks[tok] = masks.get(tok, 0) | (1 << g)
            tokens_mask |= 1 << g
            g += 1
        last_cols.append(g - 1)
        ends |= 1 << g  # the column after the sentence: the next slot, or the end
    width = g
    nbytes = (width + 7) // 8
    pad = nbytes * 8 - width

    def reverse(x: int) -> int:
        return int.from_bytes(x.to_bytes(nbytes, "little").translate(_BITREV)[::-1], "little") >> pad

    reversed_masks: dict[int, int] = {}
    start_walkers = 0
    for col in last_cols:
        start_walkers |= 1 << (width - 1 - col)

    token_cnts_r = Counter()
    token_cnts_c = Counter()
    for s in ref_sents:
        token_cnts_r.update(s)
    for s in can_sents:
        token_cnts_c.update(s)

    hits = 0
    for ref in ref_sents:
        if not ref:
            continue
        v = tokens_mask
        rows = [v]
        for tok in ref:
            match = masks.get(tok, 0)
            v = ((v + (v & match)) | (v & ~match)) & tokens_mask
            rows.append(v)
        walkers = start_walkers
        chosen = []
        for i in range(len(ref), 0, -1):
            tok = ref[i - 1]
            match = masks.get(tok, 0)
            steps_now = ~rows[i] & tokens_mask  # columns where row i steps up by one
            steps_before = ~rows[i - 1] & tokens_mask
            rises, falls = steps_now & ~steps_before, steps_before & ~steps_now
            one_above = (falls + ends - rises) & tokens_mask  # t[i][j] == t[i-1][j] + 1
            keep_left = reverse(one_above & ~steps_now & ~match)
            walkers = (keep_left + walkers) & ~keep_left
            match_rev = reversed_masks.get(tok)
            if match_rev is None:
                match_rev = reversed_masks[tok] = reverse(match)
            diagonal = walkers & match_rev
            if diagonal:
                chosen.append(i - 1)
                walkers = (walkers & ~match_rev) | (diagonal << 1)
        for index in reversed(chosen):  # ascending order, as rouge-score sorts the union
            t = ref[index]
            if token_cnts_c[t] > 0 and token_cnts_r[t] > 0:
                hits += 1
                token_cnts_c[t] -= 1
                token_cnts_r[t] -= 1
    return hits


def fmeasure(precision: float, recall: float) -> float:
    """rouge-score's F (imported so the arithmetic is the same)."""
    from rouge_score.scoring import fmeasure as _fmeasure

    return _fmeasure(precision, recall)


# -- scorers ------------------------------------------------------------------


class _Vocabulary:
    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, tokens: Iterable[str]) -> list[int]:
        ids = self.ids
        return [ids.setdefault(t, len(ids)) for t in tokens]


@dataclass(frozen=True)
class _Tokenized:
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    sentence_ids: tuple[tuple[int, ...], ...]


class FastRouge:
    """rouge-score's numbers, faster (see the module docstring).

    Texts are taken as they come: call `prepare()` first (as `score_pairs`
    does) so that rougeLsum sees one sentence per line."""

    def __init__(self, rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = True, tokenizer: str = "rouge-score"):
        unknown = [t for t in rouge_types if t not in ROUGE_TYPES]
        if unknown:
            raise ValueError(f"unknown ROUGE type(s) {', '.join(unknown)}; choose from {', '.join(ROUGE_TYPES)}")
        self.rouge_types = tuple(rouge_types)
        self.tokenizer = make_tokenizer(tokenizer, use_stemmer)
        self._vocab = _Vocabulary()
        self._cache: dict[str, _Tokenized] = {}

    def _tokenized(self, text: str) -> _Tokenized:
        hit = self._cache.get(text)
        if hit is None:
            # Tokens never span a newline, so the text's tokens are its lines' tokens in order.
            lines = [tuple(self.tokenizer.tokenize(line)) for line in text.split("\n")]
            tokens = tuple(t for line in lines for t in line)
            sentence_ids = tuple(tuple(self._vocab(line)) for line, raw in zip(lines, text.split("\n")) if len(raw))
            hit = _Tokenized(tokens, tuple(self._vocab(tokens)), sentence_ids)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[text] = hit
        return hit

    def score(self, target: str, prediction: str) -> dict[str, RougeScore]:
        from rouge_score.rouge_scorer import _create_ngrams, _score_ngrams

        ref, can = self._tokenized(target), self._tokenized(prediction)
        out = {}
        for rouge_type in self.rouge_types:
            if rouge_type == "rougeL":
                if not ref.ids or not can.ids:
                    p = r = f = 0
                else:
                    lcs = lcs_length(ref.ids, can.ids)
                    p, r = lcs / len(can.ids), lcs / len(ref.ids)
                    f = fmeasure(p, r)
            elif rouge_type == "rougeLsum":
                m = sum(map(len, ref.sentence_ids))
                n = sum(map(len, can.sentence_ids))
                if not ref.sentence_ids or not can.sentence_ids or not m or not n:
                    p = r = f = 0
                else:
                    hits = union_lcs_hits([list(s) for s in ref.sentence_ids], [list(s) for s in can.sentence_ids])
                    r, p = hits / m, hits / n
                    f = fmeasure(p, r)
            else:
                k = int(rouge_type[5:])
                score = _score_ngrams(_create_ngrams(ref.ids, k), _create_ngrams(can.ids, k))
                p, r, f = score.precision, score.recall, score.fmeasure
            out[rouge_type] = RougeScore(p, r, f)
        return out


def reference_scorer(rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = True, tokenizer: str = "rouge-score"):
    """rouge-score's own RougeScorer with the same settings (the slow reference)."""
    from rouge_score import rouge_scorer

    custom = UnicodeTokenizer(use_stemmer) if tokenizer == "unicode" else None
    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer, tokenizer=custom)


@dataclass
class RougeResult:
    """Scores of one prediction against its references."""

    per_reference: list[dict[str, RougeScore]]
    max: dict[str, RougeScore]
    mean: dict[str, RougeScore]
    non_ascii_share: float


def aggregate(per_reference: list[dict[str, RougeScore]], rouge_types: Sequence[str]):
    """(max, mean) over references; max follows rouge-score's score_multi."""
    best, mean = {}, {}
    for t in rouge_types:
        scores = [s[t] for s in per_reference]
        index = max(range(len(scores)), key=lambda i: (scores[i].fmeasure, -i))  # first of the best, like np.argmax
        best[t] = scores[index]
        k = len(scores)
        mean[t] = RougeScore(
            sum(s.precision for s in scores) / k, sum(s.recall for s in scores) / k, sum(s.fmeasure for s in scores) / k
        )
    return best, mean


class RougeScorer:
    """What longsum uses: prepared texts, fast path, several references."""

    def __init__(self, rouge_types: Sequence[str] = ROUGE_TYPES, tokenizer: str = "rouge-score", use_stemmer: bool = True, fast: bool = True):
        self.rouge_types = tuple(rouge_types)
        self.tokenizer_name = tokenizer
        self.use_stemmer = use_stemmer
        self.fast = fast
        self._scorer = (FastRouge if fast else reference_scorer)(self.rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer)

    def config(self) -> dict:
        from importlib.metadata import version

        return {
            "implementation": "longsum-fast" if self.fast else "rouge-score",
            "rouge_score_version": version("rouge-score"),
            "stemmer": self.use_stemmer, "tokenizer": self.tokenizer_name,
            "sentence_split": "pipelines.text.sentences, joined with newlines",
        }

    def score_one(self, prediction: str, references: Sequence[str]) -> RougeResult:
        if not references:
            raise ValueError("ROUGE needs at least one reference")
        pred = prepare(prediction)
        refs = [prepare(r) for r in references]
        share = max(non_ascii_share(t) for t in [pred, *refs])
        if self.tokenizer_name == "rouge-score" and share > NON_ASCII_WARN_SHARE:
            warnings.warn(
                f"{share:.0%} of the letters in a ROUGE input are non-ASCII; rouge-score's tokenizer drops them and "
                "splits such words into fragments, so the score is unreliable (the 'unicode' ROUGE tokenizer counts them)",
                NonAsciiWarning, stacklevel=2,
            )
        per_reference = []
        for ref in refs:
            raw = self._scorer.score(ref, pred)
            per_reference.append({t: RougeScore(raw[t].precision, raw[t].recall, raw[t].fmeasure) for t in self.rouge_types})
        best, mean = aggregate(per_reference, self.rouge_types)
        return RougeResult(per_reference, best, mean, share)

    def score_pairs(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[RougeResult]:
        if len(predictions) != len(references):
            raise ValueError("one list of references per prediction")
        return [self.score_one(p, r) for p, r in zip(predictions, references)]
