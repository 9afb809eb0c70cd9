"""A no-LLM baseline: the document's most central, least redundant sentences.

Centrality is a sentence's cosine similarity to the document's mean
embedding; maximal marginal relevance trades it against similarity to the
sentences already chosen. The chosen sentences are returned in document
order, within the word budget.
"""

from __future__ import annotations

from pipelines.embeddings import embed
from pipelines.summarize.common import SummaryRecord, tokens_for_words
from pipelines.text import count_words, sentences

# Weight of centrality against redundancy in maximal marginal relevance.
MMR_LAMBDA = 0.7
MIN_SENTENCE_WORDS = 4


def extractive_summary(text: str, words: int, n_chunks: int = 1, count_tokens=None) -> SummaryRecord:
    import numpy as np

    candidates = [s for s in sentences(text) if count_words(s) >= MIN_SENTENCE_WORDS]
    if not candidates:
        candidates = sentences(text) or [text.strip()]
    vectors = embed(candidates)
    centroid = vectors.mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    centrality = vectors @ centroid
    lengths = np.array([count_words(s) for s in candidates])

    chosen: list[int] = []
    redundancy = np.full(len(candidates), -1.0, dtype=np.float32)
    available = np.ones(len(candidates), dtype=bool)
    used = 0
    while True:
        fits = available & (used + lengths <= words)
        if not fits.any():
            break
        score = MMR_LAMBDA * centrality - (1 - MMR_LAMBDA) * np.maximum(redundancy, 0)
        best = int(np.argmax(np.where(fits, score, -np.inf)))
        chosen.append(best)
        used += int(lengths[best])
        available[best] = False
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    if not chosen:  # even the shortest sentence is over budget: take its first words
        best = int(np.argmax(centrality))
        summary = " ".join(candidates[best].split()[:words])
    else:
        summary = " ".join(candidates[i] for i in sorted(chosen))
    return SummaryRecord(
        level=0, idx=0, kind="extractive", text=summary, token_limit=tokens_for_words(words), word_limit=words,
        first_chunk=0, last_chunk=max(0, n_chunks - 1),
        n_tokens=count_tokens(summary) if count_tokens else 0, is_final=True,
    )
