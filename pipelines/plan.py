"""Plan a run without calling a model: chunks, tokens, and the cost preflight
(`summarize chunks FILE`, `summarize FILE --dry-run`, `summarize corpus --dry-run`).

The preflight is the workflow: it runs the run's own code -- SCOPE's
compressor, the hierarchical or incremental summarizer, their packing, level
limits, budgets and checks -- against a `PlanningBackend`, the model's
tokenizer and context window answering without a model, through a
`PlanningExecutor` that makes the steps one at a time, and reads the bounds
off the calls it records. Nothing here knows how a workflow packs or budgets;
change a workflow and its preflight changes with it. Bounds, per run:

* calls: at least those of a run whose every answer is the shortest the
  workflow accepts (the fewest merges, no compression), at most every call of
  a run whose every answer is at its max_tokens (the most merges and
  compressions) made `max_attempts` times; with SCOPE compression, every
  passage it may rewrite, asked as often as SCOPE asks (the summaries are
  then planned on the uncompressed chunks);
* input tokens: at least the shortest run's prompt text (without the chunks'
  own text when a compressor may shorten them first), at most every attempt
  of the longest run's whole prompts (message overhead, the context margin
  and a retry's few changed digits included). Which source passages a
  grounded step reads depends on what its summaries say, which no planned
  run knows: the lower bound counts none of them, the upper bound counts
  such a prompt as the whole room it may fill (its window less its answer);
* output tokens: at most every attempt's max_tokens (a server cannot send more).

The cost range runs from a typical run (every step accepted at its first
attempt, answers half their limit, prompt-cache reads on the shared prefix
where the provider caches it) to the upper bound (every attempt, every answer
at its limit, no cache reads; Anthropic's cache writes at 1.25x). Prices
come from genai-prices (`pipelines.llm.pricing`); batch prices are half.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.budget import usd  # noqa: F401 - one money format for the preflight, the refusal and the budget
from pipelines.chunking import Chunk, local_counter
from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from pipelines.documents import Document, load_document
from pipelines.llm import token_counter
from pipelines.llm.base import WrappedBackend
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
# Where a compressed chunk's text meets its prompt's template, tokens may merge.
FLOOR_SLACK_TOKENS = 2
# Shortest prefix the providers cache (OpenAI automatically, Anthropic with cache_control; 1024 for most models).
CACHE_MIN_TOKENS = {"openai": 1024, "anthropic": 1024}


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
    """The preflight of one document under one configuration (see module doc): the run's
    own steps, made against a `PlanningBackend` (no model) with the longest answers, the
    shortest and typical ones, and SCOPE's with answers it refuses."""
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
    attempts = config.max_attempts
    # The upper bound: every answer at its max_tokens, every step at its max_attempts;
    # SCOPE's passages each asked max_attempts times (the real compressor's own retries).
    # A server's count costs a request: the plan's answers and prompts are counted with the local
    # tokenizer scaled to the server's count of this document (known from chunking).
    count = local_counter(document.text, count_tokens_for(backend))
    rewrites = _scope_calls(PlanningBackend(backend, "failing", count), config, document, chunks, estimate)
    upper, records = _summarize(PlanningBackend(backend, "longest", count), config, document, chunks, replay=False)
    for call in rewrites:
        _bound(estimate, call, 1)
    for call in upper.calls:
        _bound(estimate, call, attempts)
    if config.method == "hierarchical":
        estimate.levels = 1 + max(r.level for r in records)
    # The lower bound: every answer the shortest one accepted, at its first attempt, on chunks
    # a compressor may have shortened to nothing (less a few tokens where text and template meet).
    floor = [dataclasses.replace(c, text="") for c in chunks] if config.compress != "none" else chunks
    lower, _ = _summarize(PlanningBackend(backend, "shortest", count), config, document, floor, replay=True)
    estimate.calls_min = len(lower.calls)
    slack = FLOOR_SLACK_TOKENS if config.compress != "none" else 0
    estimate.input_min = sum(max(0, c.text - slack) for c in lower.calls)
    # A typical run: every step accepted at its first attempt, answers half their limit;
    # SCOPE's passages each rewritten once.
    typical, _ = _summarize(PlanningBackend(backend, "typical", count), config, document, chunks, replay=True)
    for call in typical.calls + [c for c in rewrites if c.first]:
        estimate.calls_typical += 1
        estimate.input_typical += call.prompt
        estimate.output_typical += call.max_tokens // 2
    _cache(estimate, backend, upper.calls[0].prefix if upper.calls else 0)
    _price(estimate, backend)
    return estimate


def _bound(estimate: Estimate, call: "_Call", attempts: int) -> None:
    """One call of the upper-bound run, made `attempts` times at most."""
    from pipelines.llm.base import CONTEXT_SAFETY_TOKENS

    estimate.calls_max += attempts
    estimate.input_max += attempts * (call.most + CONTEXT_SAFETY_TOKENS + RETRY_SLACK_TOKENS)
    estimate.output_max += attempts * call.max_tokens


def _cache(estimate: Estimate, backend, prefix: int) -> None:
    """Prompt-cache reads of a typical run, writes at the most: the shared prefix of every call."""
    cache_min = CACHE_MIN_TOKENS.get(backend.backend)
    if cache_min and prefix >= cache_min:
        estimate.cache_reads_typical = prefix * max(0, estimate.calls_typical - 1)
        if backend.backend == "anthropic":
            estimate.cache_writes_max = prefix * estimate.calls_max
    elif cache_min:
        estimate.notes.append(f"the shared prompt prefix ({prefix} tokens) is shorter than the {cache_min} tokens "
                              f"{backend.backend} caches: no prompt-cache reads counted")


def _summarize(backend: "PlanningBackend", config: RunConfig, document: Document, chunks: list[Chunk], *,
               replay: bool):
    """The run's workflow (the one `summarize_document` runs) against a planning backend: the
    backend (its calls recorded) and the workflow's records. `replay`: identical requests are
    answered from the journal, as in a run; without it every request is a call (an upper bound,
    and the executor's probes ask the same prompt for answers of other lengths)."""
    from pipelines.llm.recording import RecordingLLM
    from pipelines.runner import summarizer_for
    from pipelines.summarize.common import Progress
    from pipelines.summarize.incremental import current_summary

    llm = RecordingLLM(backend, _Journal(replay), priced=False)
    summarizer = summarizer_for(config, llm, document.kind, Progress())
    # An incremental step leaves a running summary, which may be its answer or a compression of it.
    state = (lambda produced: current_summary(produced).n_tokens) if config.method == "incremental" else None
    records = summarizer.run(chunks, PlanningExecutor(backend, state if backend.length == "longest" else None))
    return backend, records


def _scope_calls(backend: "PlanningBackend", config: RunConfig, document: Document, chunks: list[Chunk],
                 estimate: Estimate) -> list["_Call"]:
    """SCOPE's rewrite calls, made before the chunks are summarized. Which passages a run
    rewrites depends on the answers before (its budget is re-allocated after each), so every
    passage SCOPE cuts a chunk into is planned as rewritten, at the largest share it still
    rewrites (the longest answer, the most keywords), by the compressor's own code, with answers
    that fail its checks: its every attempt, with its own retry notes."""
    import math

    from pipelines.compress import resolve_method, scope_inputs
    from pipelines.compress.scope import ScopeCompressor
    from pipelines.llm.recording import RecordingLLM

    if config.compress == "none":
        return []
    if resolve_method(config.compress, document.kind) == "longcodezip":
        estimate.notes.append("LongCodeZip ranks code without an API call; its chunks are counted uncompressed")
    if config.compress_ratio >= 1:
        return []
    compressor = ScopeCompressor(RecordingLLM(backend, _Journal(replay=False), priced=False))
    s = compressor.settings
    share = math.nextafter(s.verbatim_at, 0)  # a passage asked to keep verbatim_at or more stays verbatim
    passages = 0
    for chunk in chunks:
        for text in scope_inputs(chunk.text, config.compress, document.kind, backend.count_tokens):
            if not text.strip():
                continue
            units, vectors, pieces, vocab, query_vector, _ = compressor.prepare(text, config.compress_query)
            for j, piece in enumerate(pieces):
                start = len(backend.calls)
                compressor._compress_chunk(j, piece, share, units, vectors, vocab, query_vector)
                if len(backend.calls) > start:
                    backend.calls[start].first = True
                    passages += 1
    if passages:
        estimate.notes.append(f"SCOPE may rewrite {passages:,} passages first (up to {s.max_attempts} calls each); "
                              "the summaries are planned on the uncompressed chunks")
    return backend.calls


class _Journal:
    """A run's journal in memory, as far as planning needs it: a request made
    before is answered from it (replay=True, as in a run), or never (each
    request is made again). It keeps no prompt text."""

    def __init__(self, replay: bool):
        self.replay = replay
        self._by_hash: dict = {}

    def lookup(self, request_hash: str):
        return self._by_hash.get(request_hash)

    def record(self, record) -> None:
        if self.replay and record.status == "ok" and not record.cached:
            self._by_hash.setdefault(record.request_hash, dataclasses.replace(record, request=""))


@dataclass
class _Call:
    """One call a planned run made: its prompt's text tokens (source passages left out); the whole
    prompt (message overhead included); the leading system messages (what a provider may cache);
    max_tokens; the most its prompt may be (a grounded step's passages may fill its room)."""

    text: int
    prompt: int
    prefix: int
    max_tokens: int
    first: bool = False  # SCOPE: a passage's first attempt
    most: int = 0


# Words that are one token in the common tokenizers; a planning answer is drawn from them
# in a fixed random order (no sentence or 4-gram repeats in any answer's length).
_VOCABULARY = ("river garden stone light house window forest summer winter morning letter market bridge mountain "
               "ocean island village castle father mother sister brother friend doctor captain money paper table "
               "chair field horse train road street church school night water fire earth silver golden simple "
               "quiet strong young early happy great small large green black white round plain clear sharp heavy "
               "carry bring think speak write begin leave learn watch drive visit travel answer follow return "
               "music story truth power place world voice heart party dinner picture number order point reason "
               "second minute hour week month season corner yellow orange purple north south east west little "
               "wooden famous modern ancient secret public private common careful gentle honest").split()
_STREAM: list[str] = []


def _words(k: int) -> list[str]:
    while len(_STREAM) < k:
        _STREAM.extend(random.Random(len(_STREAM)).choices(_VOCABULARY, k=4096))
    return _STREAM[:k]


class PlanningBackend(WrappedBackend):
    """The run's backend (`planning_backend`: its tokenizer and context window)
    answering without a model, each answer a valid one of the length `length`
    names: `longest` (the request's max_tokens), `typical` (half of it),
    `shortest` (one word), or `failing` (max_tokens with no sentence end: no
    check of the workflow passes it). Valid means what the workflows accept:
    sentences of distinct words (no repeated sentence or 4-gram, nothing of
    the prompt's instructions), within max_tokens as the tokenizer counts.
    Every call is recorded in `calls`; `cap`, when set, shortens every answer
    to at most that many tokens (the executor's probes). `count`, when given,
    counts in place of the backend's tokenizer: a server's /tokenize would
    take a request for every planned answer and prompt."""

    def __init__(self, inner, length: str, count=None):
        super().__init__(inner)
        self.length = length
        self._count = count or inner.count_tokens
        self.cap: int | None = None
        self.calls: list[_Call] = []
        self._counts: dict[tuple[int, int], int] = {}
        self._answers: dict[tuple[int, bool], str] = {}

    def describe(self) -> dict:
        return self.inner.describe()

    def count_tokens(self, text: str) -> int:
        # The planned runs count the same chunks and prompts again and again (kept by hash: a
        # whole book's prompts would not fit in memory).
        key = (hash(text), len(text))
        n = self._counts.get(key)
        if n is None:
            n = self._counts[key] = self._count(text)
        return n

    def complete(self, request):
        from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, Completion, prompt_tokens
        from pipelines.summarize.passage_ids import passages_block

        limit = request.max_tokens
        n = {"longest": limit, "failing": limit, "typical": limit // 2, "shortest": 1}[self.length]
        text = self._answer(max(1, min(n, self.cap or n)), ends=self.length != "failing")
        messages = request.messages
        system = list(itertools.takewhile(lambda m: m["role"] == "system", messages))
        prompt = prompt_tokens(self, messages)
        written, most = sum(self.count_tokens(m["content"]) for m in messages), prompt
        passages = passages_block(messages[-1]["content"])
        if passages is not None:
            written = max(0, written - self.count_tokens(passages) - FLOOR_SLACK_TOKENS)
            most = max(prompt, self.context_window - limit - CONTEXT_SAFETY_TOKENS)
        self.calls.append(_Call(written, prompt, prompt_tokens(self, system), limit, most=most))
        return Completion(text, input_tokens=prompt, output_tokens=self.count_tokens(text), finish_reason="stop",
                          latency_s=0.0)

    def _answer(self, tokens: int, ends: bool) -> str:
        """The longest text of the planning words within `tokens` (at least one word)."""
        key = (tokens, ends)
        if key not in self._answers:
            def text(k: int) -> str:
                words = _words(k)
                if not ends:
                    return " ".join(words)
                return " ".join(" ".join(words[i:i + 8]).capitalize() + "." for i in range(0, k, 8))

            lo, hi = 1, tokens  # a word is at least one token
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count_tokens(text(mid)) <= tokens:
                    lo = mid
                else:
                    hi = mid - 1
            self._answers[key] = text(lo)
        return self._answers[key]


class PlanningExecutor:
    """Runs a workflow's steps one at a time, in order, as a run with one
    worker does. Given `state` (what a step leaves the next, in tokens), each
    step is also tried with shorter answers: a workflow may replace a long
    answer by a shorter one (incremental compresses an overlong update), so
    the longest answers are not always the longest state. The run goes on
    from the longest state found; the calls it keeps are those of the longest
    answers (the most calls, the longest prompts and answers)."""

    def __init__(self, backend: PlanningBackend, state=None):
        self.backend = backend
        self.state = state
        self._shares = [0.5, 0.5]  # where the last two steps' longest answers kept as they are lay (share of longest)

    def map(self, step, calls) -> list:
        return [self._run(step, args) for args in calls]

    def _run(self, step, args):
        backend = self.backend
        start = len(backend.calls)
        result = step(*args)
        if self.state is None:
            return result
        keep = len(backend.calls)
        try:
            kept = self._longest_kept(step, args, keep - start, max(c.max_tokens for c in backend.calls[start:]))
            if kept is not None and self.state(kept) > self.state(result):
                result = kept
        finally:
            del backend.calls[keep:]
        return result

    def _longest_kept(self, step, args, made: int, longest: int):
        """The step's result with the longest answers that make fewer calls than the longest
        answers do (None if there are none): found by probing answer caps, from where the
        last step's lay."""
        backend = self.backend
        found: dict[int, object] = {}

        def fewer(cap: int) -> bool:
            backend.cap, before = cap, len(backend.calls)
            try:
                result = step(*args)
            finally:
                backend.cap = None
            if len(backend.calls) - before < made:
                found[cap] = result
                return True
            return False

        lo, hi = 0, longest  # fewer(lo) holds (0: none found yet), fewer(hi) does not
        share = 2 * self._shares[-1] - self._shares[-2]  # the steps' budgets drift steadily: follow them
        guess, stride = min(longest - 1, max(1, round(share * longest))), 1
        if guess < 1:
            return None
        if fewer(guess):
            lo = guess
            while lo + stride < hi and fewer(lo + stride):
                lo, stride = lo + stride, stride * 2
            hi = min(hi, lo + stride)
        elif guess == 1 or not fewer(1):  # no answer spares a call
            return None
        else:
            lo, hi = 1, guess
            while hi - stride > lo and not fewer(hi - stride):
                hi, stride = hi - stride, stride * 2
            lo = max(lo, hi - stride)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fewer(mid) else (lo, mid)
        if lo == 0:
            return None
        self._shares = [self._shares[-1], lo / longest]
        return found[lo]


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
