"""Incremental updating (BooookScore, Chang et al. 2024, section 2).

A running summary is updated with each chunk in order. Its word budget grows
with progress through the document (chunk j of n may use j/n of the final
budget); when an update leaves it over that budget, it is compressed to the
budget, and when the next update prompt would not fit the context window it
is compressed first. The workflow is sequential by nature.

Grounded updates (`grounding_share` > 0, `--grounded`): each update also
reads the passages of the parts already read most relevant to the summary
it rewrites (`pipelines.summarize.grounding`), the source its earlier
content came from. They take at most that share of the room the update's
inputs may fill, and only what the summary and the new part leave of it:
they never push the summary into a compression or the part out of the
prompt, and an update with no room left runs without them.
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
from pipelines.summarize.grounding import Grounding
from pipelines.summarize.passage_ids import without_ids
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
        self.sources: Grounding | None = None  # the chunks' passages, when updates are grounded (see `run`)

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
        if self.settings.grounding_share:
            self.sources = Grounding(chunks)
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
            passages = self.grounding(previous, chunk, limit)
            outcome = self.generation.run(
                "incremental_update_grounded" if passages else "incremental_update",
                {"summary": previous, "text": chunk.text, "position": position, "passages": passages, **self._common},
                limit, words, step=f"update:{j}",
                fallback=lambda w: salvage_update(previous, chunk.text, w, chunks_before=j),
                clean=without_ids if passages else None,
            )
        updated = SummaryRecord.from_outcome(
            outcome, level=0, idx=j, kind="update", token_limit=limit, word_limit=words, first_chunk=0, last_chunk=j,
        )
        produced.append(updated)
        if updated.n_tokens > BUDGET_TOLERANCE * tokens_for_words(words):
            self._compress(updated, words, j, produced)
        return produced

    def _update_template(self) -> str:
        return "incremental_update_grounded" if self.sources else "incremental_update"

    def _room_left(self, summary: str, text: str, limit: int) -> int:
        """Tokens an update of `summary` with `text` leaves free in the context window (no passages)."""
        rendered = prompts.render(self._update_template(), summary=summary, text=text, position="part 999 of 999",
                                  words=9999, passages="", **self._common)
        return self.llm.context_window - prompt_tokens(self.llm.backend, rendered.messages) - limit - CONTEXT_SAFETY_TOKENS

    def _update_fits(self, summary: str, text: str, limit: int) -> bool:
        return self._room_left(summary, text, limit) >= 0

    def passage_budget(self, summary: str, chunk: Chunk, limit: int) -> int:
        """Tokens an update's passages may take: the grounding share of the room its inputs may
        fill, and never more than the summary and the new part leave free."""
        if self.sources is None:
            return 0
        inputs_room = self._room_left("", "", limit)
        return max(0, min(int(self.settings.grounding_share * inputs_room), self._room_left(summary, chunk.text, limit)))

    def grounding(self, summary: str, chunk: Chunk, limit: int) -> str:
        """The passages of the parts before `chunk` most relevant to the summary an update rewrites
        ("" when updates are not grounded or no room is left)."""
        if self.sources is None or chunk.idx == 0:
            return ""
        return self.sources.passages([summary], 0, chunk.idx - 1, self.passage_budget(summary, chunk, limit),
                                     self.llm.count_tokens)

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
