"""Plan a run without calling a model: chunks, tokens, and the cost preflight
(`summarize chunks FILE`, `summarize FILE --dry-run`, `summarize corpus --dry-run`).

The estimate walks the workflow's own planning (hierarchical: its level
limits and its packing of summaries into merge prompts; incremental: its
growing budgets) with every prompt rendered from its real template and
counted with the model's tokenizer. Bounds, per run:

* calls: at least one per step of the shortest path, at most every step's
  `max_attempts`, with every summary at its token limit (the most merges);
  with SCOPE compression, up to its attempts for every passage it may
  rewrite (the summaries are then planned on the uncompressed chunks);
* input tokens: at least the chunk prompts' text (less the chunks' own text
  when a compressor shortens them first), at most every attempt's whole
  prompt (message overhead and the context margin included);
* output tokens: at most every attempt's max_tokens (a server cannot send more).

The cost range runs from a typical run (every step accepted at its first
attempt, answers half their limit, prompt-cache reads on the shared prefix
where the provider caches it) to the upper bound (every attempt, every answer
at its limit, no cache reads; Anthropic's cache writes at 1.25x). Prices
come from genai-prices (`pipelines.llm.pricing`); batch prices are half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.budget import usd  # noqa: F401 - one money format for the preflight, the refusal and the budget
from pipelines.chunking import Chunk
from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from pipelines.documents import Document, load_document
from pipelines.llm import token_counter
from pipelines.runner import RunConfig, make_chunks


@dataclass
class Plan:
    document: Document
    chunks: list[Chunk]
    config: RunConfig
    tokenizer: str

    def chunk_lines(self) -> list[str]:
        """A column header, then one row per chunk."""
        return [f"{'chunk':>5s}  {'tokens':>13s}  {'section':30s}  first words"] + [
            f"{c.idx:5d}  {c.n_tokens:6d} tokens  {(c.section or '-')[:30]:30s}  {' '.join(c.text.split()[:8])[:60]}"
            for c in self.chunks
        ]

    def describe(self) -> str:
        """The document and its chunks. Calls, levels and costs are the
        estimate's (`Estimate.lines`), planned by the workflow itself: this
        header makes no guess of its own about them."""
        tokens = sum(c.n_tokens for c in self.chunks)
        n = len(self.chunks)
        sizes = sorted(c.n_tokens for c in self.chunks) or [0]
        return "\n".join([
            f"{self.document.path}: {self.document.kind}, {self.document.encoding}, {len(self.document.text):,} characters, "
            f"{len(self.document.sections)} sections",
            f"{n} chunks of at most {self.config.chunk_size} tokens ({self.tokenizer}); {tokens:,} tokens in all; "
            f"chunk sizes min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}",
        ])


def plan_file(path: str | Path, *, model: str = DEFAULT_MODEL, chunk_size: int = DEFAULT_CHUNK_TOKENS,
              chunker: str = "structured", overlap: int = 0, kind: str | None = None) -> Plan:
    config = RunConfig(model=model, chunk_size=chunk_size, chunker=chunker, overlap=overlap, kind=kind)
    config.validate()
    document = load_document(path, kind=kind)
    tokenizer, count = token_counter(model)
    return Plan(document, make_chunks(document, config, count), config, tokenizer=tokenizer)


# -- the cost preflight --------------------------------------------------------

# A retry asks for fewer words: its prompt differs from the first in a digit or two.
RETRY_SLACK_TOKENS = 2
# Shortest prefix the providers cache (OpenAI automatically, Anthropic with cache_control; 1024 for most models).
CACHE_MIN_TOKENS = {"openai": 1024, "anthropic": 1024}
_LABEL_TOKENS = 10  # "Summary N:" and the separators around one merged summary, counted generously


@dataclass
class Estimate:
    method: str
    model: str
    documents: int = 1
    chunks: int = 0
    levels: int = 0
    calls_min: int = 0
    calls_max: int = 0
    calls_typical: int = 0
    input_min: int = 0
    input_max: int = 0
    input_typical: int = 0
    output_max: int = 0
    output_typical: int = 0
    cache_reads_typical: int = 0
    cache_writes_max: int = 0
    cost_low: float | None = 0.0
    cost_high: float | None = 0.0
    batch: bool = False
    notes: list[str] = field(default_factory=list)

    def add(self, other: "Estimate") -> "Estimate":
        total = Estimate(self.method if self.method == other.method else "all", self.model if self.model == other.model
                         else "several", batch=self.batch or other.batch)
        for name in ("documents", "chunks", "calls_min", "calls_max", "calls_typical", "input_min", "input_max",
                     "input_typical", "output_max", "output_typical", "cache_reads_typical", "cache_writes_max"):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        total.levels = max(self.levels, other.levels)
        total.cost_low = None if self.cost_low is None or other.cost_low is None else self.cost_low + other.cost_low
        total.cost_high = None if self.cost_high is None or other.cost_high is None else self.cost_high + other.cost_high
        total.notes = list(dict.fromkeys(self.notes + other.notes))
        return total

    def lines(self) -> list[str]:
        what = f"{self.documents} documents" if self.documents > 1 else "1 document"
        merges = max(0, self.levels - 1)
        out = [
            f"plan: {self.method}, {self.model}: {what}, {self.chunks} chunks"
            + (f", up to {self.levels} summary levels (the chunk summaries and {merges} level"
               f"{'' if merges == 1 else 's'} of merges)" if self.method == "hierarchical" else ""),
            f"LLM calls: {self.calls_min:,} to {self.calls_max:,} (typically {self.calls_typical:,}); no call is made now",
            f"input tokens: at least {self.input_min:,}, at most {self.input_max:,} (typically {self.input_typical:,}); "
            f"output tokens: at most {self.output_max:,} (typically {self.output_typical:,})",
        ]
        if self.cache_reads_typical:
            out.append(f"prompt cache: about {self.cache_reads_typical:,} input tokens read from the provider's cache "
                       f"in a typical run")
        if self.method == "extractive":
            out.append("estimated cost: $0 (no LLM call)")
        elif self.cost_high == 0:
            out.append("estimated cost: $0 (a local model: no per-token price)" if _local(self.model)
                       else "estimated cost: $0 (genai-prices gives this endpoint no per-token price)")
        elif self.cost_high is None:
            out.append("estimated cost: unknown (genai-prices has no price for this endpoint; set LONGSUM_PRICE_AS="
                       "provider:model to price it as one)")
        else:
            kind = "batch prices (half the list price)" if self.batch else "list prices"
            out.append(f"estimated cost: {usd(self.cost_low)} to {usd(self.cost_high)} at {kind} (genai-prices)")
        out.extend(f"note: {n}" for n in self.notes)
        return out

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _local(spec: str) -> bool:
    from pipelines.llm.pricing import LOCAL_BACKENDS

    return spec.partition(":")[0] in LOCAL_BACKENDS


class _TokenOnly:
    """What planning needs of a backend (its tokenizer and context window),
    without an API key or a client: estimating makes no call."""

    def __init__(self, backend: str, model: str, context_window: int, count, tokenizer: str):
        self.backend, self.model, self.context_window, self.base_url = backend, model, context_window, None
        self.count_tokens = count
        self.tokenizer = tokenizer

    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model}

    def describe(self) -> dict:
        return self.identity()

    def complete(self, request):
        raise AssertionError("the preflight makes no LLM call")


def planning_backend(config: RunConfig):
    """A backend to plan with: the real one where creating it costs nothing
    (a local model; a server, whose /tokenize is its own tokenizer), else the
    provider's tokenizer and context window without a client."""
    from pipelines.llm import parse_spec
    from pipelines.runner import make_backend

    backend, model = parse_spec(config.model)
    if backend == "llamacpp" or config.base_url:
        return make_backend(config)
    if backend == "openai":
        from pipelines.llm.openai_backend import known_context_window
        from pipelines.llm.tokenizers import openai_counter

        tokenizer, count = openai_counter(model)
        return _TokenOnly("openai", model, config.context_window or known_context_window(model) or 128_000, count,
                          tokenizer)
    from pipelines.llm.anthropic_backend import DEFAULT_CONTEXT_WINDOW, TOKENIZER, count_tokens

    return _TokenOnly("anthropic", model, config.context_window or DEFAULT_CONTEXT_WINDOW, count_tokens, TOKENIZER)


def estimate_document(document: Document, config: RunConfig, backend=None, *, batch: bool = False,
                      chunks: list[Chunk] | None = None) -> Estimate:
    """The preflight of one document under one configuration (see module doc)."""
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.runner import check_budgets, count_tokens_for

    config.validate()
    estimate = Estimate(config.method, config.model, batch=batch)
    if config.method == "extractive":
        estimate.model = "extractive"
        estimate.chunks = len(chunks or [])
        return estimate
    backend = backend or planning_backend(config)
    check_budgets(config, backend)
    chunks = chunks if chunks is not None else make_chunks(document, config, count_tokens_for(backend))
    estimate.chunks = len(chunks)
    llm = RecordingLLM(backend, MemoryJournal())
    steps = _scope_steps(llm, config, document, chunks, estimate)
    steps += (_hierarchical_steps if config.method == "hierarchical" else _incremental_steps)(llm, config, document,
                                                                                              chunks, estimate)
    prefix = _shared_prefix_tokens(llm, config, document)
    cache_min = CACHE_MIN_TOKENS.get(backend.backend)
    for step in steps:
        attempts = step.attempts or config.max_attempts
        estimate.calls_max += attempts * step.may_run
        estimate.input_max += attempts * step.may_run * (step.prompt_max + RETRY_SLACK_TOKENS)
        estimate.output_max += attempts * step.may_run * step.max_tokens
        estimate.calls_min += step.must_run
        estimate.input_min += step.must_run * step.prompt_min
        estimate.calls_typical += step.typical
        estimate.input_typical += step.typical * step.prompt_max
        estimate.output_typical += step.typical * (step.max_tokens // 2)
    if cache_min and prefix >= cache_min:
        estimate.cache_reads_typical = prefix * max(0, estimate.calls_typical - 1)
        if backend.backend == "anthropic":
            estimate.cache_writes_max = prefix * estimate.calls_max
    elif cache_min:
        estimate.notes.append(f"the shared prompt prefix ({prefix} tokens) is shorter than the {cache_min} tokens "
                              f"{backend.backend} caches: no prompt-cache reads counted")
    _price(estimate, backend)
    return estimate


@dataclass
class _Step:
    prompt_min: int  # the prompt's text tokens (no template overhead): a floor
    prompt_max: int  # the whole prompt with overhead and margin, its inputs at their limits
    max_tokens: int
    must_run: int = 1  # 1: every run makes this call at least once
    may_run: int = 1  # 0: a call the run never makes
    typical: int = 1
    attempts: int | None = None  # at most this many calls (None: the run's max_attempts)


def _prompt_sizes(llm, template: str, values: dict, max_tokens: int) -> tuple[int, int, int]:
    import prompts
    from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, fit_max_tokens, prompt_tokens

    rendered = prompts.render(template, **values)
    text = sum(llm.count_tokens(m["content"]) for m in rendered.messages)
    whole = prompt_tokens(llm.backend, rendered.messages) + CONTEXT_SAFETY_TOKENS
    return text, whole, fit_max_tokens(llm.backend, rendered.messages, max_tokens)


def _hierarchical_steps(llm, config: RunConfig, document: Document, chunks: list[Chunk], estimate: Estimate):
    from pipelines.summarize.common import words_for_tokens
    from pipelines.summarize.hierarchical import HierarchicalSummarizer

    summarizer = HierarchicalSummarizer(llm, config.settings(), kind=document.kind)
    common = summarizer._common
    n = len(chunks)
    limits = summarizer.plan_limits(n)
    steps = []
    for chunk in chunks:
        where = f"part {chunk.idx + 1} of {n}" + (f", in the section headed '{chunk.section}'" if chunk.section else "")
        text, whole, out = _prompt_sizes(llm, "chunk_summary", {"text": chunk.text, "position": where,
                                                                 "words": words_for_tokens(limits[0]), **common}, limits[0])
        steps.append(_Step(_floor(config, text, chunk), whole, out))
    # Merges, every summary below at its limit: the most prompts and the longest ones.
    top = config.settings().summary_tokens
    below = [limits[0]] * n
    level = 1
    while len(below) > 1:
        final = _pack(summarizer, below, top)
        out_limit = top if len(final) == 1 else (limits[level] if level < len(limits) else top)
        groups = final if len(final) == 1 else _pack(summarizer, below, out_limit)
        for idx, group in enumerate(groups):
            with_context = idx > 0
            overhead = summarizer._overhead("merge_with_context" if with_context else "merge")
            context = summarizer.context_budget(out_limit) if with_context else 0
            whole = overhead + sum(group) + context
            steps.append(_Step(0, whole, out_limit, must_run=1 if level == 1 and idx == 0 else 0))
        below = [out_limit] * len(groups)
        level += 1
    estimate.levels = level
    return steps


def _pack(summarizer, sizes: list[int], out_limit: int) -> list[list[int]]:
    """The hierarchical workflow's packing (HierarchicalSummarizer.group) on token sizes."""
    groups, current, used = [], [], 0
    for size in sizes:
        room = summarizer.merge_room(out_limit, with_context=bool(groups))
        cost = size + _LABEL_TOKENS
        if current and used + cost > room:
            groups.append(current)
            current, used = [], 0
        current.append(cost)
        used += cost
    if current:
        groups.append(current)
    return groups


def _incremental_steps(llm, config: RunConfig, document: Document, chunks: list[Chunk], estimate: Estimate):
    from pipelines.summarize.common import tokens_for_words
    from pipelines.summarize.incremental import BUDGET_TOLERANCE, UPDATE_HEADROOM, IncrementalSummarizer

    summarizer = IncrementalSummarizer(llm, config.settings(), kind=document.kind)
    common = summarizer._common
    n = len(chunks)
    steps = []
    running = 0  # the running summary's tokens at most
    for chunk in chunks:
        j = chunk.idx
        words = summarizer.target_words(j, n)
        limit = min(summarizer.settings.summary_tokens, math.ceil(UPDATE_HEADROOM * tokens_for_words(words)))
        if j == 0:
            text, whole, out = _prompt_sizes(llm, "incremental_start", {"text": chunk.text, "words": words, **common},
                                             limit)
        else:
            position = f"part {j + 1} of {n}" + (f", in the section headed '{chunk.section}'" if chunk.section else "")
            text, whole, out = _prompt_sizes(llm, "incremental_update", {
                "summary": "", "text": chunk.text, "position": position, "words": words, **common}, limit)
            whole += running
            if whole + limit > llm.context_window:  # the running summary may be compressed first
                steps.append(_compress_step(llm, common, running, tokens_for_words(summarizer.target_words(j - 1, n) // 2)))
        steps.append(_Step(_floor(config, text, chunk), whole, out))
        if limit > BUDGET_TOLERANCE * tokens_for_words(words):  # an overlong update is compressed
            steps.append(_compress_step(llm, common, limit, tokens_for_words(words)))
        running = limit
    return steps


def _floor(config: RunConfig, text_tokens: int, chunk: Chunk) -> int:
    """A chunk prompt's floor: its text, or without the chunk's own text (its
    n_tokens, counted by the same tokenizer) when a compressor may shorten
    that first (the tokens where the two meet may merge: a few of slack)."""
    if config.compress == "none":
        return text_tokens
    return max(0, text_tokens - chunk.n_tokens - 2)


def _scope_steps(llm, config: RunConfig, document: Document, chunks: list[Chunk], estimate: Estimate) -> list[_Step]:
    """SCOPE's rewrite calls, made before the chunks are summarized: every
    passage SCOPE cuts a chunk into may be asked up to its `max_attempts`
    times, each answer within the passage's verbatim share (a passage asked
    to keep more stays verbatim: no call), the longest retry note attached."""
    import pipelines.compress.keywords as kw
    from pipelines.compress import resolve_method, scope_inputs
    from pipelines.compress.scope import TEMPLATE, Check, ScopeCompressor, retry_note

    if config.compress == "none":
        return []
    if resolve_method(config.compress, document.kind) == "longcodezip":
        estimate.notes.append("LongCodeZip ranks code without an API call; its chunks are counted uncompressed")
    if config.compress_ratio >= 1:
        return []
    compressor = ScopeCompressor(llm)
    s = compressor.settings
    steps = []
    for chunk in chunks:
        for text in scope_inputs(chunk.text, config.compress, document.kind, llm.count_tokens):
            if not text.strip():
                continue
            _, _, passages, vocab, _, _ = compressor.prepare(text, config.compress_query)
            for passage in passages:
                keywords = kw.pick(passage.text, vocab, s.max_keywords)
                worst = Check("x", 0, ["too short", "not prose"], list(keywords))  # every note at once
                answer = int(s.verbatim_at * passage.tokens * (1 + s.length_tolerance)) + 8
                _, whole, out = _prompt_sizes(llm, TEMPLATE, {
                    "text": passage.text.strip(), "words": 99_999, "keywords": ", ".join(keywords) or "(none)",
                    "note": retry_note(worst, 99_999)}, answer)
                # slack: the note quotes the last answer's word count, here one word
                steps.append(_Step(0, whole + RETRY_SLACK_TOKENS, out, must_run=0, attempts=s.max_attempts))
    if steps:
        estimate.notes.append(f"SCOPE may rewrite {len(steps):,} passages first (up to {s.max_attempts} calls each); "
                              "the summaries are planned on the uncompressed chunks")
    return steps


def _compress_step(llm, common: dict, summary_tokens: int, limit: int) -> _Step:
    _, whole, out = _prompt_sizes(llm, "incremental_compress", {"summary": "", "words_now": 9999, "words": 9999,
                                                                 **common}, limit)
    return _Step(0, whole + summary_tokens, out, must_run=0, typical=0)


def _shared_prefix_tokens(llm, config: RunConfig, document: Document) -> int:
    """Tokens of the prompt prefix every call of a run shares, what a provider
    can cache: the leading system message(s); the user message after them
    names the part being read, so it differs from call to call."""
    import itertools

    import prompts
    from pipelines.llm.base import MESSAGE_OVERHEAD_TOKENS
    from pipelines.summarize.common import prompt_values

    template = "chunk_summary" if config.method == "hierarchical" else "incremental_update"
    rendered = prompts.render(template, text="", position="", summary="", words=1, **prompt_values(document.kind))
    leading = itertools.takewhile(lambda m: m["role"] == "system", rendered.messages)
    return sum(llm.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in leading)


def _price(estimate: Estimate, backend) -> None:
    from pipelines.llm.base import Completion
    from pipelines.llm.pricing import BATCH_DISCOUNT, cost_usd, price_target

    name, model, base_url = price_target(backend.backend, backend.model, getattr(backend, "base_url", None))

    def cost(input_tokens, output_tokens, reads=0, writes=0):
        usage = Completion("", input_tokens=input_tokens, output_tokens=output_tokens, finish_reason="stop",
                           latency_s=0.0, cached_input_tokens=reads, cache_write_tokens=writes)
        value = cost_usd(name, model, usage, base_url)
        return None if value is None else value * (BATCH_DISCOUNT if estimate.batch else 1.0)

    estimate.cost_low = cost(estimate.input_typical, estimate.output_typical, reads=estimate.cache_reads_typical)
    estimate.cost_high = cost(estimate.input_max, estimate.output_max, writes=estimate.cache_writes_max)


def estimate_file(path: str | Path, config: RunConfig, *, batch: bool = False) -> tuple[Plan, Estimate]:
    config.validate()
    document = load_document(path, kind=config.kind)
    backend = planning_backend(config) if config.method != "extractive" else None
    if backend is None:  # extractive: cl100k chunks, as the run makes them
        from pipelines.llm.tokenizers import count_cl100k

        chunks = make_chunks(document, config, count_cl100k)
        return Plan(document, chunks, config, tokenizer="cl100k_base"), estimate_document(document, config, chunks=chunks)
    from pipelines.runner import count_tokens_for

    chunks = make_chunks(document, config, count_tokens_for(backend))
    tokenizer = getattr(backend, "tokenizer_name", lambda: getattr(backend, "tokenizer", backend.backend))()
    return (Plan(document, chunks, config, tokenizer=str(tokenizer)),
            estimate_document(document, config, backend, batch=batch, chunks=chunks))


def estimate_corpus(items, configs: list[RunConfig], *, batch: bool = False) -> tuple[list[Estimate], Estimate | None]:
    """Per configuration, the sum over the corpus's documents; and the total.
    Documents that cannot be read are left out (the run will record them failed)."""
    per_config = []
    for config in configs:
        backend = planning_backend(config) if config.method != "extractive" else None
        total = None
        for item in items:
            try:
                document = item.document or load_document(item.path, kind=config.kind)
            except Exception:  # noqa: BLE001 - the run records it as failed; it costs nothing
                continue
            estimate = estimate_document(document, config, backend, batch=batch)
            total = estimate if total is None else total.add(estimate)
        if total is not None:
            per_config.append(total)
    overall = None
    for estimate in per_config:
        overall = estimate if overall is None else overall.add(estimate)
    return per_config, overall


def refuse_over_budget(estimate: Estimate | None, max_cost: float | None, *, dry_run: str | None = None,
                       base_url: str | None = None) -> None:
    """ValueError (one line) when the preflight's upper bound exceeds the budget, or cannot be priced.
    `dry_run`: the command that prints the plan (`dry_run_command`), else the message
    says to run the same command with --dry-run."""
    if max_cost is None or estimate is None or estimate.method == "extractive":
        return
    if estimate.cost_high is None:
        raise ValueError(f"--max-cost: genai-prices has no price for {estimate.model}"
                         + (f" at {base_url}" if base_url else "") + "; set LONGSUM_PRICE_AS=provider:model to price it")
    if estimate.cost_high > max_cost:
        see = f"run `{dry_run}` for the plan" if dry_run else "the same command with --dry-run prints the plan"
        raise ValueError(f"the estimate's upper bound {usd(estimate.cost_high)} exceeds --max-cost {usd(max_cost)} "
                         f"({see}); nothing was started")


# `summarize FILE` options whose values shape the plan: (RunConfig field, option)
_PLAN_OPTIONS = (("method", "--method"), ("model", "--model"), ("base_url", "--base-url"),
                 ("context_window", "--context-window"), ("chunk_size", "--chunk-size"), ("chunker", "--chunker"),
                 ("overlap", "--overlap"), ("summary_words", "--summary-words"), ("kind", "--kind"),
                 ("compress", "--compress"), ("compress_ratio", "--compress-ratio"),
                 ("compress_query", "--compress-query"), ("compress_model", "--compress-model"))


def dry_run_command(file: str | Path, config: RunConfig) -> str:
    """The `summarize FILE ... --dry-run` that plans this configuration: the
    method and model always, the other options where they differ from the defaults."""
    import shlex

    defaults = RunConfig()
    words = ["summarize", str(file)]
    for name, option in _PLAN_OPTIONS:
        value = getattr(config, name)
        if name in ("method", "model") or (value is not None and value != getattr(defaults, name)):
            words += [option, str(value)]
    return shlex.join(words + ["--dry-run"])
