"""Incremental updating (BooookScore, Chang et al. 2024, section 2).

A running summary is updated with each chunk in order. Its word budget grows
with progress through the document (chunk j of n may use j/n of the final
budget); when an update leaves it over that budget, it is compressed to the
budget, and when the next update prompt would not fit the context window it
is compressed first. The workflow is sequential by nature.
"""

from __future__ import annotations

import math

import prompts
from pipelines.chunking import Chunk
from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, prompt_tokens
from pipelines.llm.recording import RecordingLLM
from pipelines.summarize.common import (
    Generation,
    Progress,
    RetryLearning,
    SummarizeSettings,
    SummaryRecord,
    prompt_values,
    tokens_for_words,
)
from pipelines.summarize.executors import Executor, Recipe, ThreadExecutor, call
from pipelines.summarize.extractive import salvage, salvage_update
from pipelines.text import count_words

# An updated summary may run this much over its current budget before it is
# compressed: models rarely hit a word count exactly.
BUDGET_TOLERANCE = 1.2
# An update may write up to this multiple of its current budget (never more
# than the final limit): room to see an overrun, without paying for a model
# that rambles to the final limit on every chunk.
UPDATE_HEADROOM = 2.0
MIN_WORDS = 24


class IncrementalSummarizer:
    def __init__(self, llm: RecordingLLM, settings: SummarizeSettings, kind: str = "book", progress: Progress | None = None):
        self.llm = llm
        self.settings = settings
        self.progress = progress or Progress()
        self.kind = kind
        self.generation = Generation(llm, settings)
        self.learning = RetryLearning(settings)
        self._common = prompt_values(kind)

    def recipe(self) -> Recipe:
        return Recipe(IncrementalSummarizer, {"settings": self.settings, "kind": self.kind})

    def _learn(self, records: list[SummaryRecord]) -> None:
        """Feed finished steps to the retry learning; later steps get its settings."""
        settings = self.learning.observe(records)
        if settings is not self.settings:
            self.settings = settings
            self.generation = Generation(self.llm, settings)

    def target_words(self, j: int, n: int) -> int:
        """Budget after reading chunk j (0-based) of n: grows linearly to the full budget."""
        return max(MIN_WORDS, round(self.settings.summary_words * (j + 1) / n))

    def run(self, chunks: list[Chunk], executor: Executor | None = None) -> list[SummaryRecord]:
        """Every output of the run in order; the last kept one is final. Each
        update reads the summary before it, so each is a step of its own."""
        executor = executor or ThreadExecutor(1)
        records: list[SummaryRecord] = []
        self.progress.expect(len(chunks))
        running: SummaryRecord | None = None
        for chunk in chunks:
            produced = call(executor, self.step, running, chunk, len(chunks))
            self._learn(produced)
            records.extend(produced)
            running = current_summary(produced)
            self.progress.step("chunk")
        if running is not None:
            running.is_final = True
        return records

    def step(self, running: SummaryRecord | None, chunk: Chunk, n: int) -> list[SummaryRecord]:
        """Read one more chunk: the records it produced; `current_summary()` of
        them is the running summary afterwards."""
        j = chunk.idx
        words = self.target_words(j, n)
        limit = min(self.settings.summary_tokens, math.ceil(UPDATE_HEADROOM * tokens_for_words(words)))
        produced: list[SummaryRecord] = []
        if running is None:
            outcome = self.generation.run(
                "incremental_start", {"text": chunk.text, **self._common}, limit, words,
                step=f"update:{j}", fallback=lambda w: salvage(chunk.text, w),
            )
        else:
            if not self._update_fits(running.text, chunk.text, limit):
                running = self._compress(running, self.target_words(j - 1, n) // 2, j, produced)
            previous = running.text
            position = f"part {j + 1} of {n}" + (f", in the section headed '{chunk.section}'" if chunk.section else "")
            outcome = self.generation.run(
                "incremental_update",
                {"summary": previous, "text": chunk.text, "position": position, **self._common},
                limit, words, step=f"update:{j}",
                fallback=lambda w: salvage_update(previous, chunk.text, w, chunks_before=j),
            )
        updated = SummaryRecord.from_outcome(
            outcome, level=0, idx=j, kind="update", token_limit=limit, word_limit=words, first_chunk=0, last_chunk=j,
        )
        produced.append(updated)
        if updated.n_tokens > BUDGET_TOLERANCE * tokens_for_words(words):
            self._compress(updated, words, j, produced)
        return produced

    def _update_fits(self, summary: str, text: str, limit: int) -> bool:
        rendered = prompts.render(
            "incremental_update", summary=summary, text=text, position="part 999 of 999", words=9999, **self._common
        )
        needed = prompt_tokens(self.llm.backend, rendered.messages) + limit + CONTEXT_SAFETY_TOKENS
        return needed <= self.llm.context_window

    def _compress(self, summary: SummaryRecord, words: int, j: int, records: list[SummaryRecord]) -> SummaryRecord:
        """Shorten the running summary to `words`; keeps the original if that fails to shorten it.
        A compression that did not shorten is recorded as degraded (and is not the running summary)."""
        limit = tokens_for_words(words)
        outcome = self.generation.run(
            "incremental_compress", {"summary": summary.text, "words_now": count_words(summary.text), **self._common},
            limit, words, step=f"compress:{j}", fallback=lambda w: salvage(summary.text, w),
        )
        compressed = SummaryRecord.from_outcome(
            outcome, level=0, idx=j, kind="compress", token_limit=limit, word_limit=words,
            first_chunk=0, last_chunk=j,
        )
        if compressed.n_tokens >= summary.n_tokens:
            compressed.degraded = True
            compressed.kept = False
            compressed.note = (compressed.note + "; " if compressed.note else "") + "compression did not shorten; kept the original"
            records.append(compressed)
            return summary
        records.append(compressed)
        return compressed


def current_summary(produced: list[SummaryRecord]) -> SummaryRecord:
    """The running summary after a step: the last output the step kept."""
    return [r for r in produced if r.kept][-1]
