"""The compressor: both stages run to a token budget (`LongCodeZip`,
`compress_code`), selection repeated with cached scores until the result
lands within the budget's tolerance."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pipelines.compress.common import (
    ChunkReport,
    CompressionResult,
    TokenCounter,
    allocate_ratios,
    check_ratio,
    normalise,
)
from pipelines.compress.longcodezip.ami import AMIScorer
from pipelines.compress.longcodezip.assemble import join_blocks, layout
from pipelines.compress.longcodezip.blocks import entropy_blocks, knapsack, line_perplexities
from pipelines.compress.longcodezip.functions import CodeChunk, class_headers, header_text, split_code
from pipelines.compress.longcodezip.lines import indentation, placeholder_line
from pipelines.compress.longcodezip.rank import fuse, select_by_rank, select_with_headers
from pipelines.compress.longcodezip.settings import LongCodeZipSettings, Scorer
from pipelines.compress.longcodezip.structure import structure_scores
from pipelines.compress.longcodezip.syntax import _LineRules, _parses_like, python_line_rules


@dataclass
class _FunctionAnalysis:
    blocks: list[tuple[int, int]]
    block_scores: list[float]
    block_tokens: list[int]
    signature_tokens: int
    line_values: list[float] = field(default_factory=list)


class LongCodeZip:
    def __init__(self, scorer: Scorer | None, count_tokens: TokenCounter, settings: LongCodeZipSettings | None = None,
                 language: str | None = "python", *, journal=None, run_id: str | None = None,
                 step: str = "compress:longcodezip"):
        self.scorer = scorer
        self.count_tokens = count_tokens
        self.settings = settings or LongCodeZipSettings()
        self.language = language
        self.journal = journal
        self.run_id = run_id
        self.step = step
        self._analysis: dict[int, _FunctionAnalysis] = {}
        self._query = ""
        self._code = ""
        self._ami_scorer: AMIScorer | None = None

    def _ami(self) -> AMIScorer:
        if self.scorer is None:
            raise ValueError(f"LongCodeZip signals {self.settings.signals!r} need a scorer (a llama.cpp model)")
        if self._ami_scorer is None:
            self._ami_scorer = AMIScorer(self.scorer, self.settings, self.journal, self.run_id, self.step)
        return self._ami_scorer

    def compress(self, code: str, query: str, ratio: float) -> CompressionResult:
        started = time.perf_counter()
        ratio = check_ratio(ratio)
        s = self.settings
        stats_before = _scorer_stats(self.scorer)
        self._targeted = bool(query.strip())
        query = query.strip("\n") or default_query()
        chunks = split_code(code, self.language, s.max_module_lines)
        sizes = [self.count_tokens(c.text) for c in chunks]
        total = self.count_tokens(code)
        budget = ratio * total
        if total <= budget or not chunks:
            reports = [self._report(c, sizes[i], sizes[i], 1.0, float("nan"), "kept", c.text) for i, c in enumerate(chunks)]
            result = self._result(code, total, total, ratio, reports, started, stats_before, {"budget": budget})
            result.layout = [(c.start, c.end, c.text, True) for c in chunks]
            return result

        self._query, self._code = query, code
        self._analysis = {}
        coarse_budget = min(total, budget / s.fine_keep) if s.fine_grained else budget
        scores, signal_stats = self._rank_chunks(chunks, sizes, query, code, coarse_budget)

        # Select, compress, measure; move the coarse budget by the miss and
        # repeat (scores are cached), keeping the closest result within budget.
        # A kept method is shown under its own class: the class headers it
        # sits in come with it, and count against the budget.
        headers = class_headers(chunks)
        header_sizes = [self._header_cost(c) if c.kind == "class" else 0 for c in chunks]
        best = None
        for round_ in range(s.max_rounds):
            selected, heads = select_with_headers(sizes, scores, coarse_budget, headers, header_sizes,
                                                  at_least_one=s.fine_grained)
            text, reports, layout = self._assemble(chunks, sizes, scores, selected, heads, budget)
            n = self.count_tokens(text)
            fits = n <= budget * (1 + s.tolerance)
            if best is None or (fits and (not best[0] or n > best[1])) or (not fits and not best[0] and n < best[1]):
                best = (fits, n, text, reports, layout, selected, heads, coarse_budget)
            if fits and n >= budget * (1 - s.tolerance):
                break
            step = (budget - n) / (s.fine_keep if s.fine_grained and not fits else 1.0)
            coarse_budget = max(0.0, min(total, coarse_budget + step))
        _, n, text, reports, layout, selected, heads, coarse_budget = best
        stats = {"budget": round(budget, 1), "coarse_budget": round(coarse_budget, 1), "rounds": round_ + 1,
                 "selected": len(selected), "headers": len(heads), "chunks": len(chunks), "signals": s.signals,
                 **signal_stats}
        result = self._result(text, total, n, ratio, reports, started, stats_before, stats)
        result.layout = layout
        return result

    def _header_cost(self, chunk: CodeChunk) -> int:
        """Tokens of a class chunk kept as its header alone (the rest one placeholder)."""
        head = header_text(chunk)
        rest = chunk.text[len(head):]
        marker = placeholder_line(indentation(rest), self.language, True) if rest.strip() else ""
        return self.count_tokens(head + marker)

    # -- stages ---------------------------------------------------------------

    def _rank_chunks(self, chunks, sizes, query, code, coarse_budget) -> tuple[list[float], dict]:
        """One score per chunk under the settings' signals, and what it cost."""
        s = self.settings
        structure = None
        if s.signals != "ami":
            structure = structure_scores(chunks, sizes, query, self.language, s.query_weight, s.neighbours,
                                         targeted=getattr(self, "_targeted", True))
            if s.signals == "structure":
                return structure, {}
        if s.signals == "ami":
            pool = list(range(len(chunks)))
        else:
            pool = select_by_rank(sizes, structure, s.ami_pool * coarse_budget)
        ami = self._ami()
        hits, misses = ami.hits, ami.misses
        values = ami.score({i: chunks[i].text for i in pool}, query, code)
        stats = {"ami_scored": len(pool), "ami_cached": ami.hits - hits, "ami_computed": ami.misses - misses}
        if structure is None:
            return [values[i] for i in range(len(chunks))], stats
        return fuse(structure, values, s.ami_weight), stats

    def rank(self, texts: Sequence[str], query: str | None = None) -> list[float]:
        """AMI of each text with the query (PPL(q) - PPL(q | text)); -inf for blank text."""
        if query is not None:
            self._query = query.strip("\n") or default_query()
        values = self._ami().score(dict(enumerate(texts)), self._query, self._code or "".join(texts))
        return [values[i] for i in range(len(texts))]

    def _compressible(self, chunk: CodeChunk) -> bool:
        body = chunk.lines[chunk.signature_lines:]
        return self.settings.fine_grained and sum(1 for line in body if line.strip()) >= self.settings.min_lines_for_fine

    def _assemble(self, chunks, sizes, scores, selected, heads, budget) -> tuple[str, list[ChunkReport], list]:
        s = self.settings
        selected_set, head_set = set(selected), set(heads)
        compressible = [i for i in selected if self._compressible(chunks[i])]
        fixed = [i for i in selected if i not in compressible]
        # what is not the compressible functions' own text: placeholders and class headers
        around = self._layout(chunks, selected_set, head_set, {i: "" for i in compressible})
        fine_budget = budget - sum(sizes[i] for i in fixed) - sum(
            self.count_tokens(text) for _, _, text, verbatim in around if not verbatim)
        shares: dict[int, float] = {i: 1.0 for i in compressible}
        pieces: dict[int, tuple[str, str, dict]] = {}
        # Knapsacks leave part of each share unspent and placeholders cost
        # tokens: move the budget handed out by the miss and repeat.
        asked, best = fine_budget, None
        for _ in range(s.max_rounds if compressible else 1):
            if compressible and asked < sum(sizes[i] for i in compressible):
                # every kept function keeps at least its signature and one placeholder line
                floors = [min(1.0, self._minimum(chunks[i]) / max(1, sizes[i])) for i in compressible]
                ratios = allocate_ratios([sizes[i] for i in compressible], [scores[i] for i in compressible],
                                         max(0.0, asked), beta=s.importance_beta, floor=floors)
                shares = dict(zip(compressible, ratios))
            else:
                shares = {i: 1.0 for i in compressible}
            pieces = {i: self._fine(chunks[i], shares[i] * sizes[i]) for i in compressible}
            used = sum(self.count_tokens(pieces[i][0]) for i in compressible)
            fits = used <= fine_budget + s.tolerance * budget
            if best is None or (fits and (not best[0] or used > best[1])) or (not fits and not best[0] and used < best[1]):
                best = (fits, used, shares, pieces)
            if fits and used >= fine_budget - s.tolerance * budget:
                break
            asked = max(0.0, asked + (fine_budget - used))
        _, _, shares, pieces = best
        layout = self._layout(chunks, selected_set, head_set, {i: pieces[i][0] for i in pieces})
        reports = []
        for i, chunk in enumerate(chunks):
            if i in selected_set:
                if i in pieces:
                    text, action, detail = pieces[i]
                else:
                    text, action, detail = chunk.text, "kept", {}
                reports.append(self._report(chunk, sizes[i], self.count_tokens(text), shares.get(i, 1.0), scores[i],
                                            action, text, detail))
            elif i in head_set:
                text = header_text(chunk)
                reports.append(self._report(chunk, sizes[i], self.count_tokens(text), 0.0, scores[i], "header", text))
            else:
                reports.append(self._report(chunk, sizes[i], 0, 0.0, scores[i], "dropped", ""))
        return "".join(text for _, _, text, _ in layout), reports, layout

    def _layout(self, chunks, whole: set[int], heads: set[int], pruned: dict[int, str]) -> list[tuple[int, int, str, bool]]:
        """The compressed code as pieces in order (`assemble.layout`)."""
        return layout(chunks, whole, heads, pruned, self.language)

    def _minimum(self, chunk: CodeChunk) -> int:
        """Tokens of a function cut down to its signature and a placeholder."""
        lines = chunk.lines
        body = "".join(lines[chunk.signature_lines:])
        return self.count_tokens("".join(lines[: chunk.signature_lines]) + placeholder_line(indentation(body), self.language))

    def _analyse(self, chunk: CodeChunk) -> _FunctionAnalysis:
        if chunk.idx not in self._analysis:
            lines = chunk.lines
            values = line_perplexities(self.scorer, chunk.text)
            blocks = entropy_blocks(lines, values, chunk.signature_lines, self.settings.spike_k,
                                    self.settings.max_block_lines)
            texts = ["".join(lines[a:b]) for a, b in blocks]
            self._analysis[chunk.idx] = _FunctionAnalysis(
                blocks=blocks,
                block_scores=self.rank(texts),
                block_tokens=[self.count_tokens(t) for t in texts],
                signature_tokens=self.count_tokens("".join(lines[: chunk.signature_lines])),
                line_values=values,
            )
        return self._analysis[chunk.idx]

    def _fine(self, chunk: CodeChunk, target: float) -> tuple[str, str, dict]:
        """The function cut to at most `target` tokens by knapsack over its blocks."""
        if target >= self.count_tokens(chunk.text) * 0.999:
            return chunk.text, "kept", {"share": 1.0}
        a = self._analyse(chunk)
        marker_cost = self.count_tokens(placeholder_line(indentation(chunk.text), self.language))
        # Importances scaled to (0, 1]: every block is worth something, so the
        # knapsack spends the function's share on the most important blocks
        # instead of leaving it unused when some AMIs are negative.
        values = [0.01 + v for v in normalise(a.block_scores)]
        capacity = int(target - a.signature_tokens - marker_cost)
        syntax = python_line_rules(chunk) if (self.language or "python").lower() == "python" else None
        while True:  # each gap between kept blocks costs a placeholder line: tighten until it fits
            kept = set(knapsack(a.block_tokens, values, capacity))
            text = self._join_blocks(chunk, a.blocks, kept, syntax)
            over = self.count_tokens(text) - int(target)
            if over <= 0 or not kept:
                break
            capacity -= max(over, 1)
        detail = {"blocks": len(a.blocks), "blocks_kept": len(kept), "target_tokens": round(target, 1),
                  "block_scores": [round(x, 4) if math.isfinite(x) else None for x in a.block_scores]}
        if kept and not _parses_like(chunk.text, text, self.language):  # a safety net: python_line_rules should suffice
            text = self._join_blocks(chunk, a.blocks, set())
            detail["blocks_kept"], detail["unparseable_blocks"] = 0, len(kept)
        return text, "pruned", detail

    def _join_blocks(self, chunk: CodeChunk, blocks: list[tuple[int, int]], kept: set[int],
                     syntax: "_LineRules | None" = None) -> str:
        """A pruned function's kept blocks and placeholders (`assemble.join_blocks`)."""
        return join_blocks(chunk, blocks, kept, self.language, syntax)

    # -- reporting --------------------------------------------------------------

    @staticmethod
    def _report(chunk, original, compressed, share, score, action, text, detail=None) -> ChunkReport:
        return ChunkReport(
            idx=chunk.idx, method="longcodezip", kind=chunk.kind, start=chunk.start, end=chunk.end,
            original_tokens=original, compressed_tokens=compressed, target_ratio=round(float(share), 4),
            importance=float(score) if math.isfinite(score) else float("nan"), action=action, text=text,
            name=chunk.name, detail=detail or {},
        )

    def _result(self, text, total, n, ratio, reports, started, stats_before, stats) -> CompressionResult:
        after = _scorer_stats(self.scorer)
        scorer = {k: round(after.get(k, 0) - stats_before.get(k, 0), 3) for k in after}
        return CompressionResult(
            method="longcodezip", text=text, original_tokens=total, compressed_tokens=n, target_ratio=ratio,
            chunks=reports, seconds=time.perf_counter() - started, stats={**stats, "scorer": scorer},
        )


def _scorer_stats(scorer) -> dict:
    stats = getattr(scorer, "stats", None)
    return stats.as_dict() if stats is not None and hasattr(stats, "as_dict") else {}


def default_query() -> str:
    import prompts

    return prompts.snippet("longcodezip_query")


def compress_code(
    code: str,
    ratio: float,
    query: str = "",
    *,
    scorer: Scorer | None = None,
    count_tokens: TokenCounter | None = None,
    language: str | None = "python",
    settings: LongCodeZipSettings | None = None,
    journal=None,
    run_id: str | None = None,
    step: str = "compress:longcodezip",
) -> CompressionResult:
    """Compress code to about `ratio` of its tokens, keeping what matters to `query`.

    `scorer` defaults to the packaged model (`pipelines.llm.logprobs.default_scorer`)
    when the signals need one; `count_tokens` (the tokenizer the budget is
    counted in) defaults to the scorer's. `journal` (a CallJournal such as
    the store's `llm_calls`) caches the model's scores."""
    settings = settings or LongCodeZipSettings()
    if scorer is None and (settings.signals != "structure" or settings.fine_grained or count_tokens is None):
        from pipelines.llm.logprobs import default_scorer

        scorer = default_scorer()
    counter: Callable[[str], int] = count_tokens or (lambda t: len(scorer.tokenize(t)))
    return LongCodeZip(scorer, counter, settings, language, journal=journal, run_id=run_id,
                       step=step).compress(code, query, ratio)
