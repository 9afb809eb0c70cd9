"""Source passages for grounded steps (after Ou & Lapata 2025, context-aware
hierarchical merging): a step that rewrites summaries also reads the source
they came from, so that where a summary is vague or wrong the source decides.

The run's chunks are cut into passages (`pipelines.retrieval`); a step asks
for the passages of a range of chunks most relevant to the summary text it
rewrites, within a token budget. They come back in document order, each with
its `[Pn]` id (`passage_ids`), so the model can cite them. Hierarchical
merges ask for their own chunks' passages; incremental updates for those of
the parts already read (the new part is in the prompt whole).
"""

from __future__ import annotations

from typing import Callable, Sequence

from pipelines.chunking import Chunk
from pipelines.summarize.passage_ids import with_ids
from pipelines.text import sentences

GROUNDING_HITS = 3  # passages retrieved per summary sentence, before the budget picks among them


class Grounding:
    """The passages of a run's chunks, searchable."""

    def __init__(self, chunks: Sequence[Chunk]):
        from pipelines.retrieval import passages_from_chunks, source_index

        passages = passages_from_chunks([(c.idx, c.start, c.text) for c in chunks])
        self.sources = source_index(tuple(passages)) if passages else None  # chunks compressed to nothing

    def passages(self, summaries: Sequence[str], first_chunk: int, last_chunk: int, budget: int,
                 count_tokens: Callable[[str], int]) -> str:
        """The passages of chunks `first_chunk`..`last_chunk` most relevant to the sentences of
        `summaries`, as many as fit `budget` tokens, in document order with their ids ("" if none)."""
        if self.sources is None or budget <= 0:
            return ""
        among = self.sources.in_chunks(first_chunk, last_chunk)
        queries = [s for text in summaries for s in sentences(text)]
        if not among or not queries:
            return ""
        relevance: dict[int, float] = {}
        for hits in self.sources.search(queries, k=GROUNDING_HITS, among=among):
            for hit in hits:
                relevance[hit.passage] = max(relevance.get(hit.passage, 0.0), hit.fused)
        chosen, used = [], 0
        label = len(f"[P{len(relevance)}] ".encode()) + 2  # its id and separator, bounded by their bytes
        for i in sorted(relevance, key=lambda i: (-relevance[i], i)):
            cost = count_tokens(self.sources.passages[i].text) + label
            if used + cost <= budget:
                chosen.append(i)
                used += cost
        return with_ids([self.sources.passages[i].text for i in sorted(chosen)])
