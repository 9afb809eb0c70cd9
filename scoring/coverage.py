"""Coverage profile: which parts of the document a summary draws from (no LLM).

Each summary sentence is aligned to the passage of the run's source chunks
it most likely draws from (`pipelines.retrieval.TextIndex.pin`: MiniLM
embeddings and BM25 fused by rank propose five, the supporting one with the
most shared rare words is taken). A sentence counts as grounded when that passage shares a
content word with it and their cosine similarity is at least `threshold`, or
when the passage holds it word for word; generic sentences ("The novel explores grief") align to nothing in
particular and are left out of the profile rather than pinned to a random
page. Each alignment is stored (table `coverage`: sentence, chunk, span,
relative position, decile, similarities), so the profile can be drawn or
queried with SQL.

Metrics (rows in `scores`, metric `coverage`):

* `deciles`: the share of the document's ten deciles (by character
  position) that at least one grounded sentence draws from;
* `end_share`: the share of grounded sentences whose passage lies in the
  last 10 % of the document (FABLES found LLM summaries over-weight the end
  of the book; a summary that followed the book evenly would be near 0.1);
* `grounded`: the share of sentences that are grounded;
* `mean_position`: the mean relative position of the grounded sentences;
* `sentences`: the number of summary sentences.

What it does not measure: whether the sentence is faithful to that passage,
whether the covered parts are the important ones, or content that a
sentence draws from several places at once (only its best passage counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.retrieval import SUPPORT_THRESHOLD
from pipelines.text import sentences as split_sentences

DEFAULT_THRESHOLD = SUPPORT_THRESHOLD
DECILES = 10


@dataclass
class Alignment:
    sentence_num: int
    sentence: str
    chunk_idx: int
    start: int
    end: int
    position: float
    decile: int
    similarity: float
    lexical: float
    grounded: bool


@dataclass
class CoverageResult:
    alignments: list[Alignment]
    config: dict = field(default_factory=dict)

    @property
    def grounded(self) -> list[Alignment]:
        return [a for a in self.alignments if a.grounded]

    @property
    def deciles_covered(self) -> list[int]:
        return sorted({a.decile for a in self.grounded})

    def values(self) -> list[tuple[str, float | None]]:
        n, grounded = len(self.alignments), self.grounded
        return [
            ("deciles", len(self.deciles_covered) / DECILES if n else None),
            ("end_share", sum(1 for a in grounded if a.decile == DECILES - 1) / len(grounded) if grounded else None),
            ("grounded", len(grounded) / n if n else None),
            ("mean_position", sum(a.position for a in grounded) / len(grounded) if grounded else None),
            ("sentences", n),
        ]


def profile(summary: str, index, threshold: float = DEFAULT_THRESHOLD) -> CoverageResult:
    """Align every sentence of `summary` to its best passage of `index` (a pipelines.retrieval.SourceIndex)."""
    sentences = split_sentences(summary)
    alignments = []
    for number, (sentence, (hit, backed)) in enumerate(zip(sentences, index.pin(sentences, threshold=threshold)), 1):
        passage = index.passages[hit.passage]
        position = index.position(passage)
        alignments.append(Alignment(
            sentence_num=number, sentence=sentence, chunk_idx=passage.chunk_idx, start=passage.start, end=passage.end,
            position=position, decile=min(DECILES - 1, int(position * DECILES)), similarity=hit.dense,
            lexical=hit.lexical, grounded=backed,
        ))
    config = {"method": "minilm+bm25 rank fusion, best passage per sentence (pinned: most lexical of the top 5 that support it)", "threshold": threshold,
              "grounded_rule": "shares a content word and cosine >= threshold, or holds the sentence word for word", "deciles": DECILES,
              "passages": len(index.passages), "embedding_model": "all-MiniLM-L6-v2"}
    return CoverageResult(alignments, config)


def coverage_rows(run_id, summary_id, result: CoverageResult, config_hash: str, created, set_label=None) -> list[dict]:
    return [{
        "run_id": run_id, "summary_id": summary_id, "set_label": set_label, "sentence_num": a.sentence_num,
        "sentence": a.sentence, "chunk_idx": a.chunk_idx, "start_char": a.start, "end_char": a.end,
        "position": a.position, "decile": a.decile, "similarity": a.similarity, "lexical": a.lexical,
        "grounded": a.grounded, "config_hash": config_hash, "created_at": created,
    } for a in result.alignments]
