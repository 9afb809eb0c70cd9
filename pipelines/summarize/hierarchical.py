"""Hierarchical merging (BooookScore, Chang et al. 2024, section 2).

Level 0 summarizes every chunk independently (these calls may run
concurrently). Each higher level walks the summaries below it in order,
packing as many consecutive ones as fit the context window into one merge
prompt, with the previous merge of the same level given as context. Levels
repeat until one summary is left. Token limits shrink down the levels: the
top summary gets the full limit and each level below `level_shrink` of the
one above, so that the inputs of a merge fit its context.

Grounded merging (`grounding_share` > 0, `--grounded`; after Ou & Lapata
2025, context-aware hierarchical merging): each merge prompt also carries
the source passages of its chunks most relevant to the summaries it merges
(`pipelines.summarize.grounding`), in document order. They take that share of the
merge's room, so the packing of summaries leaves it to them, and the
preflight, which runs this code, counts them too.
"""

from __future__ import annotations

import math

import prompts
from pipelines.chunking import Chunk
from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, PromptTooLongError, prompt_tokens
from pipelines.llm.recording import RecordingLLM
from pipelines.summarize.common import (
    LEARN_STEPS,
    Generation,
    Progress,
    RetryLearning,
    SummarizeSettings,
    SummaryRecord,
    prompt_values,
    words_for_tokens,
)
from pipelines.summarize.executors import Executor, Recipe, ThreadExecutor, call
from pipelines.summarize.extractive import salvage
from pipelines.summarize.grounding import Grounding
from pipelines.summarize.passage_ids import without_ids
from pipelines.text import sentences

MIN_LEVEL_TOKENS = 64
MAX_LEVELS = 12
_LABEL_TOKENS = 8  # "Summary N:" and separators around each merged summary
_SEPARATOR = "\n\n"


class HierarchicalSummarizer:
    def __init__(self, llm: RecordingLLM, settings: SummarizeSettings, kind: str = "book", progress: Progress | None = None):
        self.llm = llm
        self.settings = settings
        self.kind = kind
        self.progress = progress or Progress()
        self.generation = Generation(llm, settings)
        self.learning = RetryLearning(settings)
        self._common = prompt_values(kind)
        self.sources: Grounding | None = None  # the chunks' passages, when merges are grounded (see `run`)

    def recipe(self) -> Recipe:
        return Recipe(HierarchicalSummarizer, {"settings": self.settings, "kind": self.kind})

    def _learn(self, records: list[SummaryRecord]) -> None:
        """Feed finished steps to the retry learning; later steps get its settings."""
        settings = self.learning.observe(records)
        if settings is not self.settings:
            self.settings = settings
            self.generation = Generation(self.llm, settings)

    # -- planning ----------------------------------------------------------

    def _overhead(self, template: str) -> int:
        """Prompt tokens of a template with all variable parts empty."""
        empty = prompts.render(template, words=9999, text="", summaries="", context="", position="", passages="",
                               **self._common)
        return prompt_tokens(self.llm.backend, empty.messages) + CONTEXT_SAFETY_TOKENS

    def _template(self, with_context: bool) -> str:
        return ("merge_grounded" if self.settings.grounding_share else "merge") + \
            ("_with_context" if with_context else "")

    def _inputs_room(self, out_limit: int, with_context: bool) -> int:
        """Tokens available for the summaries being merged and their passages (context excluded)."""
        room = self.llm.context_window - self._overhead(self._template(with_context)) - out_limit
        return room - self.context_budget(out_limit) if with_context else room

    def merge_room(self, out_limit: int, with_context: bool) -> int:
        """Tokens available for the summaries being merged (context and passages excluded)."""
        return self._inputs_room(out_limit, with_context) - self.passage_budget(out_limit, with_context)

    def passage_budget(self, out_limit: int, with_context: bool) -> int:
        return int(self.settings.grounding_share * self._inputs_room(out_limit, with_context))

    def context_budget(self, out_limit: int) -> int:
        room = self.llm.context_window - self._overhead(self._template(True)) - out_limit
        return int(self.settings.context_share * room)

    def plan_limits(self, n_chunks: int) -> list[int]:
        """Token limit per level, level 0 (chunk summaries) first, top last."""
        top = self.settings.summary_tokens
        if n_chunks <= 1:
            return [top]
        # Simulate the merging policy of merge_level with every summary at its
        # limit: the first plan whose merges end in one top-limit merge wins.
        final_room = self.merge_room(top, with_context=False)
        for levels in range(2, MAX_LEVELS + 1):
            limits = [max(MIN_LEVEL_TOKENS, round(top * self.settings.level_shrink ** (levels - 1 - i))) for i in range(levels)]
            remaining = n_chunks
            for level in range(1, levels):
                below = limits[level - 1] + _LABEL_TOKENS
                if remaining * below <= final_room:
                    return limits
                per_merge = self.merge_room(limits[level], with_context=True) // below
                if per_merge < 2:
                    break
                remaining = math.ceil(remaining / per_merge)
        raise PromptTooLongError(
            f"the {self.llm.context_window}-token context window is too small to merge {n_chunks} chunk summaries "
            f"into a {top}-token summary; use a model with a larger context, fewer --summary-words or larger chunks"
            + (" (grounded merges give source passages a share of each merge)" if self.settings.grounding_share else "")
        )

    # -- steps -------------------------------------------------------------

    def summarize_chunk(self, chunk: Chunk, n_chunks: int, token_limit: int) -> SummaryRecord:
        where = f"part {chunk.idx + 1} of {n_chunks}"
        if chunk.section:
            where += f", in the section headed '{chunk.section}'"
        words = words_for_tokens(token_limit)
        outcome = self.generation.run(
            "chunk_summary", {"text": chunk.text, "position": where, **self._common},
            token_limit, words, step=f"chunk:{chunk.idx}",
            fallback=lambda w: salvage(chunk.text, w),
        )
        self.progress.step("chunk")
        return SummaryRecord.from_outcome(outcome, level=0, idx=chunk.idx, kind="chunk", token_limit=token_limit, word_limit=words,
                       first_chunk=chunk.idx, last_chunk=chunk.idx)

    def _labelled_cost(self, n: int, record: SummaryRecord) -> int:
        """Tokens of the n-th labelled summary in a merge prompt, the separator included. The label
        is bounded by its bytes (a token spans at least one), so that only the summary is counted:
        an answer's count is already known, a labelled one would cost a server a request."""
        return self.llm.count_tokens(record.text) + len(_label(n).encode()) + 2

    def group(self, below: list[SummaryRecord], out_limit: int) -> list[list[SummaryRecord]]:
        """Consecutive runs of summaries that fit one merge prompt each."""
        groups: list[list[SummaryRecord]] = []
        current: list[SummaryRecord] = []
        used = 0
        for record in below:
            with_context = bool(groups)
            room = self.merge_room(out_limit, with_context=with_context)
            cost = self._labelled_cost(len(current) + 1, record)
            if current and used + cost > room:
                groups.append(current)
                current, used = [], 0
                room = self.merge_room(out_limit, with_context=True)
                cost = self._labelled_cost(1, record)
            if cost > room:
                raise PromptTooLongError(f"a level-{record.level} summary of {cost} tokens does not fit a merge prompt")
            current.append(record)
            used += cost
        if current:
            groups.append(current)
        return groups

    def plan_level(self, below: list[SummaryRecord], level: int, limits: list[int]) -> tuple[int, list[list[SummaryRecord]]]:
        """The output limit of this level's merges and the groups they merge."""
        top = self.settings.summary_tokens
        # If everything fits one prompt at the top limit, this merge is the last.
        final_groups = self.group(below, top)
        if len(final_groups) == 1:
            return top, final_groups
        out_limit = limits[level] if level < len(limits) else top
        return out_limit, self.group(below, out_limit)

    def merge_level(self, below: list[SummaryRecord], level: int, limits: list[int], executor: Executor) -> list[SummaryRecord]:
        out_limit, groups = self.plan_level(below, level, limits)
        self.progress.expect(len(groups))
        merged: list[SummaryRecord] = []
        for idx, group in enumerate(groups):
            # Each merge reads the end of the one before: one step at a time.
            context = self.context_from(merged[-1].text, out_limit) if merged else ""
            passages = self.grounding(group, self.passage_budget(out_limit, bool(merged)))
            merged.append(call(executor, self.merge, group, level, idx, out_limit, context, passages))
            self._learn(merged[-1:])
        return merged

    def merge(self, group: list[SummaryRecord], level: int, idx: int, out_limit: int, context: str,
              passages: str = "") -> SummaryRecord:
        words = words_for_tokens(out_limit)
        text = _SEPARATOR.join(_labelled(i + 1, r.text) for i, r in enumerate(group))
        template = ("merge_grounded" if passages else "merge") + ("_with_context" if context else "")
        outcome = self.generation.run(
            template, {"summaries": text, "context": context, "passages": passages, **self._common},
            out_limit, words, step=f"merge:{level}.{idx}",
            fallback=lambda w: salvage("\n\n".join(r.text for r in group), w),
            clean=without_ids if passages else None,
        )
        self.progress.step("merge")
        return SummaryRecord.from_outcome(outcome, level=level, idx=idx, kind="merge", token_limit=out_limit, word_limit=words,
                       first_chunk=group[0].first_chunk, last_chunk=group[-1].last_chunk)

    def grounding(self, group: list[SummaryRecord], budget: int) -> str:
        """The passages of the group's chunks most relevant to its summaries, within `budget`
        tokens, in document order, each with its id ("" when merges are not grounded)."""
        if self.sources is None:
            return ""
        return self.sources.passages([r.text for r in group], group[0].first_chunk, group[-1].last_chunk, budget,
                                     self.llm.count_tokens)

    def context_from(self, previous: str, out_limit: int) -> str:
        """The end of the previous merge, whole sentences, within the context budget."""
        budget = self.context_budget(out_limit)
        kept: list[str] = []
        used = 0
        for sentence in reversed(sentences(previous)):
            cost = self.llm.count_tokens(sentence) + 1
            if used + cost > budget:
                break
            kept.append(sentence)
            used += cost
        return " ".join(reversed(kept))

    # -- the whole workflow --------------------------------------------------

    def run(self, chunks: list[Chunk], executor: Executor | None = None) -> list[SummaryRecord]:
        """Every summary of the run, chunk summaries first; the last is final.
        The chunk summaries are two rounds for the executor (the first
        LEARN_STEPS, whose outcome decides how many attempts the others get;
        see RetryLearning), each merge a step. Through a provider's batch API
        they are one round: a second would cost a batch's turnaround (up to a
        day) to spare a model that cannot answer its retries."""
        if not chunks:
            return []
        executor = executor or ThreadExecutor(self.settings.concurrency)
        if self.settings.grounding_share:
            self.sources = Grounding(chunks)
        limits = self.plan_limits(len(chunks))
        self.progress.expect(len(chunks))
        current = []
        batched = bool(self.llm.backend.describe().get("batch"))
        for chunk_round in ((chunks,) if batched else (chunks[:LEARN_STEPS], chunks[LEARN_STEPS:])):
            if chunk_round:
                done = executor.map(self.summarize_chunk, [(chunk, len(chunks), limits[0]) for chunk in chunk_round])
                self._learn(done)
                current += done
        records = list(current)
        level = 1
        while len(current) > 1:
            if level > MAX_LEVELS:
                raise PromptTooLongError("summaries stopped getting shorter; merging did not converge")
            current = self.merge_level(current, level, limits, executor)
            records.extend(current)
            level += 1
        current[0].is_final = True
        return records


def _labelled(n: int, text: str) -> str:
    return f"{_label(n)}{text}"


def _label(n: int) -> str:
    return f"Summary {n}:\n"

