"""Retrieval over a run's source chunks: one module below both sides. The
summarizer's citations (`pipelines.citations`) and the scorers'
faithfulness evidence and coverage profile all find passages here.

The chunks a run summarized (table `chunks`, lossless, with character
offsets) are cut into passages of a few sentences, never across a chunk
boundary, so every passage names its chunk and its span in the document.
A query (a claim, a summary sentence) is matched two ways:

* dense: cosine similarity of the packaged all-MiniLM-L6-v2 sentence
  embeddings (`pipelines.embeddings`, offline). MiniLM reads at most 256 word
  pieces, which is why passages are short (~120 words) rather than whole
  chunks: a chunk of 2,000 tokens would be judged by its first lines only.
* lexical: BM25 (bm25s) over the passages' words, which catches names and
  rare words that a small embedding model blurs.

The two rankings are fused by reciprocal rank (1/(60 + rank), Cormack et al.
2009), which needs no calibration between a cosine and a BM25 score. A
passage that shares no word with the query gets no lexical share, so a query
the BM25 index cannot see is ranked by its embedding alone.

Pinning a sentence to one span (a citation, the coverage profile) asks more
than ranking: rank fusion forgets how far apart two scores are, so a passage
that shares a name, a number and a place with the sentence (BM25 23.5) can
tie with a look-alike that shares only the wording (BM25 14.3, a higher
cosine). `pin` lets fusion propose the few best candidates, which keeps
paraphrases findable, and takes among those that support the sentence the
one sharing the most of its rare words. A passage that holds the sentence
word for word supports it whatever the cosine: a long passage of dialogue
dilutes a copied sentence's embedding below the threshold, and an extractive
summary (a salvaged step) is made of such sentences.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from pipelines.text import split_sentences

PASSAGE_WORDS = 120
RRF_K = 60
PIN_CANDIDATES = 5
# A text supports a query when they share a content word and their cosine is at least this:
# generic sentences ("The novel explores grief") match nothing in particular and stay unsupported.
SUPPORT_THRESHOLD = 0.25


class EvidenceError(ValueError):
    """The run has no source text to retrieve passages from."""


@dataclass(frozen=True)
class Passage:
    chunk_idx: int
    start: int  # character offsets in the document
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    passage: int  # index into the searched texts (SourceIndex.passages)
    dense: float  # cosine similarity
    lexical: float  # BM25 score (0: no shared word)
    fused: float


def passages_from_chunks(chunks: Sequence[tuple[int, int, str]], words: int = PASSAGE_WORDS) -> list[Passage]:
    """Sentences of each chunk packed into passages of about `words` words.
    `chunks` are (idx, start_char, text). A sentence longer than two passages
    is cut at word boundaries, so no passage escapes the embedding window."""
    out: list[Passage] = []
    for idx, start, text in chunks:
        pieces: list[tuple[int, int]] = []
        offset = 0
        for sentence in split_sentences(text):
            pieces += _word_windows(sentence, offset, 2 * words)
            offset += len(sentence)
        begin, count = None, 0
        for a, b in pieces:
            n = len(text[a:b].split())
            if begin is not None and count + n > words:
                out.append(_passage(idx, start, text, begin, a))
                begin, count = None, 0
            if begin is None:
                begin = a
            count += n
            end = b
        if begin is not None:
            out.append(_passage(idx, start, text, begin, end))
    return [p for p in out if p.text]


def _word_windows(sentence: str, offset: int, limit: int) -> list[tuple[int, int]]:
    words = sentence.split()
    if len(words) <= limit:
        return [(offset, offset + len(sentence))]
    spans, position, count, begin = [], 0, 0, 0
    for word in words:
        at = sentence.index(word, position)
        if count == limit:
            spans.append((offset + begin, offset + at))
            begin, count = at, 0
        position = at + len(word)
        count += 1
    spans.append((offset + begin, offset + len(sentence)))
    return spans


def _passage(idx: int, chunk_start: int, text: str, a: int, b: int) -> Passage:
    body = text[a:b]
    lead = len(body) - len(body.lstrip())
    body = body.strip()
    return Passage(idx, chunk_start + a + lead, chunk_start + a + lead + len(body), " ".join(body.split()))


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)


class TextIndex:
    """Short texts (passages, a summary's sentences) with their embeddings and a BM25 index,
    ranked for a query by the fusion described above."""

    def __init__(self, texts: Sequence[str], embed: Callable[[list[str]], "object"] | None = None):
        import bm25s
        import numpy as np

        if embed is None:
            from pipelines.embeddings import embed
        self.embed = embed
        self.texts = list(texts)
        self.vectors = np.asarray(embed(self.texts), dtype=np.float32)
        self.bm25 = bm25s.BM25()
        self.bm25.index(bm25s.tokenize(self.texts, stopwords="en", show_progress=False), show_progress=False)
        self._lock = threading.Lock()
        self.size = len(self.texts)

    def search(self, queries: Sequence[str], k: int = 3, among: Sequence[int] | None = None) -> list[list[Hit]]:
        """The `k` best texts for each query, best first; with `among`, only those texts are ranked."""
        import numpy as np

        if not queries:
            return []
        dense = np.asarray(self.embed(list(queries)), dtype=np.float32) @ self.vectors.T
        tokens = _tokenize(list(queries))
        candidates = np.arange(self.size) if among is None else np.asarray(among, dtype=np.int64)
        out = []
        for row, words in zip(dense, tokens):
            with self._lock:  # bm25s keeps scratch state on the index
                lexical = self.bm25.get_scores(words) if words else np.zeros(self.size, dtype=np.float32)
            lexical = np.asarray(lexical, dtype=np.float64)
            out.append([Hit(i, float(row[i]), float(lexical[i]), fused)
                        for i, fused in fuse(row[candidates], lexical[candidates], candidates, k)])
        return out

    def pin(self, queries: Sequence[str], among: Sequence[int] | None = None,
            threshold: float = SUPPORT_THRESHOLD) -> list[tuple[Hit, bool]]:
        """The one text each query rests on, and whether it supports the query: among the fused
        ranking's best few, the supporting one with the highest lexical score (a text holding the
        query word for word supports it); the best fused text, unsupported, when none does."""
        out = []
        for query, hits in zip(queries, self.search(queries, k=PIN_CANDIDATES, among=among)):
            words = _normalized(query)
            backing = [hit for hit in hits if supports(hit, threshold)
                       or (hit.lexical > 0 and words in _normalized(self.texts[hit.passage]))]
            out.append((max(backing, key=lambda hit: hit.lexical), True) if backing else (hits[0], False))
        return out


class SourceIndex(TextIndex):
    """The passages of one document, searchable (`Hit.passage` indexes `passages`)."""

    def __init__(self, passages: Sequence[Passage], embed: Callable[[list[str]], "object"] | None = None):
        if not passages:
            raise EvidenceError("no source passages to search")
        self.passages = list(passages)
        super().__init__([p.text for p in self.passages], embed)
        self.passage_words: int | None = None  # set by whoever cut the passages
        self.start = min(p.start for p in self.passages)
        self.end = max(p.end for p in self.passages)

    def position(self, passage: Passage) -> float:
        """The passage's middle as a share of the document (0 = start, 1 = end)."""
        span = max(1, self.end - self.start)
        return min(1.0, max(0.0, ((passage.start + passage.end) / 2 - self.start) / span))

    def in_chunks(self, first: int, last: int) -> list[int]:
        """The passages of chunks `first` to `last`: what a summary of those chunks was given."""
        return [i for i, p in enumerate(self.passages) if first <= p.chunk_idx <= last]


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def supports(hit: Hit, threshold: float = SUPPORT_THRESHOLD) -> bool:
    return hit.lexical > 0 and hit.dense >= threshold


def fuse(dense, lexical, ids, k: int) -> list[tuple[int, float]]:
    """The `k` best of `ids` by reciprocal-rank fusion of their dense and lexical scores: (id, fused)."""
    import numpy as np

    n = len(ids)
    fused = np.zeros(n, dtype=np.float64)
    fused[np.argsort(-dense, kind="stable")] += 1.0 / (RRF_K + 1 + np.arange(n))
    matched = np.flatnonzero(lexical > 0)
    if matched.size:
        order = matched[np.argsort(-lexical[matched], kind="stable")]
        fused[order] += 1.0 / (RRF_K + 1 + np.arange(order.size))
    return [(int(ids[i]), float(fused[i])) for i in np.argsort(-fused, kind="stable")[:k]]


def load_chunks(store, run_id: str) -> list[tuple[int, int, str]]:
    with store.connect() as con:
        rows = con.execute(
            "SELECT idx, start_char, text FROM chunks WHERE run_id = ? AND text IS NOT NULL ORDER BY idx", [run_id]
        ).fetchall()
    if not rows:
        raise EvidenceError(f"run {run_id} has no source chunks in the store; faithfulness and coverage need them")
    return [(int(i), int(s or 0), t) for i, s, t in rows]


@functools.lru_cache(maxsize=4)
def source_index(passages: tuple[Passage, ...], passage_words: int | None = None) -> SourceIndex:
    """The index of these passages, made once per process: embedding a novel's passages takes
    about 30 s, and the same passages come back. A grounded run's preflight runs its workflow
    three times over the same chunks (longest, shortest and typical answers) and a run checked
    against --max-cost follows; an evaluation scores faithfulness and coverage of every method's
    run of a document, and runs of one chunk size cut the same passages. An index answers the
    same searches the same way whoever asks (its BM25 scratch is locked)."""
    index = SourceIndex(passages)
    index.passage_words = passage_words
    return index


def index_of_chunks(chunks, words: int = PASSAGE_WORDS) -> SourceIndex:
    """The shared index of a run's stored chunks (`load_chunks`): what its faithfulness,
    coverage and citations all read."""
    return source_index(tuple(passages_from_chunks(chunks, words)), words)


def index_for_run(store, run_id: str, words: int = PASSAGE_WORDS) -> SourceIndex:
    return index_of_chunks(load_chunks(store, run_id), words)
