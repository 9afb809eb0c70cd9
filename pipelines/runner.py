"""One summarization run: load -> chunk -> compress -> summarize -> persist.

This is the one orchestration of a run; the CLI runs it with a thread
executor, the Prefect flows with one that makes each step a task (see
`pipelines.summarize.executors`). The run's `runs` row is written first with status
`running` and finished as `ok`, `degraded` or `failed` (with the reason);
chunks and summaries are written in bulk; every LLM call is journaled the
moment it returns, so an interrupted run resumes from the journal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipelines.chunking import Chunk, CostlyCounter, chunk_text, fixed_window_chunks
from pipelines.documents import Document, load_document
from pipelines.llm import DEFAULT_SPEC, LLMConfigError, resolve
from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, LLMBackend
from pipelines.llm.recording import RecordingLLM, Usage, new_id
from pipelines.secrets import redact
from pipelines.store import DuckDBJournal, Store, StoreBusy, utc
from pipelines.summarize.common import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_SUMMARY_WORDS,
    Progress,
    SummarizeSettings,
    SummaryRecord,
)
from pipelines.summarize.executors import Executor, ThreadExecutor
from pipelines.text import count_words

METHODS = ("hierarchical", "incremental", "extractive")
CHUNKERS = ("structured", "fixed")
COMPRESSORS = ("none", "scope", "longcodezip", "auto")
# Room a chunk prompt needs besides the chunk and the answer (instructions).
PROMPT_OVERHEAD_TOKENS = 256
# Grounded merging: the share of a merge's room (besides its output and context) given to source passages.
GROUNDING_SHARE = 0.3


@dataclass(frozen=True)
class RunConfig:
    method: str = "hierarchical"
    model: str = DEFAULT_SPEC
    base_url: str | None = None
    context_window: int | None = None
    chunk_size: int = DEFAULT_CHUNK_TOKENS
    chunker: str = "structured"
    overlap: int = 0
    summary_words: int = DEFAULT_SUMMARY_WORDS
    concurrency: int = 1
    max_attempts: int = 3
    temperature: float = 0.0
    kind: str | None = None
    timeout_s: float | None = None  # API backends: per-request timeout
    max_retries: int | None = None  # API backends: SDK retries on 429 / 5xx / connection errors
    compress: str = "none"  # none | scope | longcodezip | auto: compress each chunk before summarizing
    compress_ratio: float = 0.5
    compress_query: str = ""
    compress_model: str | None = None  # LongCodeZip's scoring model: llamacpp (default) or llamacpp:PATH
    grounded: bool = False  # each merge (update) also reads the source passages it rests on (GROUNDING_SHARE)
    citations: bool = False  # cite every summary sentence's source when the run ends (pipelines.citations)

    def settings(self) -> SummarizeSettings:
        return SummarizeSettings(
            summary_words=self.summary_words, max_attempts=self.max_attempts,
            temperature=self.temperature, concurrency=self.concurrency,
            grounding_share=GROUNDING_SHARE if self.grounded else 0.0,
        )

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.chunker not in CHUNKERS:
            raise ValueError(f"unknown chunker {self.chunker!r}; choose one of {', '.join(CHUNKERS)}")
        if self.chunk_size < 64:
            raise ValueError("--chunk-size must be at least 64 tokens")
        if self.summary_words < 10:
            raise ValueError("--summary-words must be at least 10")
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("concurrency and attempts must be at least 1")
        if self.compress not in COMPRESSORS:
            raise ValueError(f"unknown compression {self.compress!r}; choose one of {', '.join(COMPRESSORS)}")
        if not 0 < self.compress_ratio <= 1:
            raise ValueError("--compress-ratio must be in (0, 1]")
        if self.grounded and self.method not in ("hierarchical", "incremental"):
            raise ValueError("--grounded grounds the merges of --method hierarchical and the updates of --method incremental")
        if self.compress != "none" and self.method == "extractive":
            raise ValueError("--compress needs an LLM method (hierarchical or incremental), not extractive")
        if self.compress_model:
            from pipelines.llm.logprobs import scorer_path

            scorer_path(self.compress_model)  # a clear error before the run starts


@dataclass
class RunResult:
    run_id: str
    status: str
    summary: str
    method: str
    model: str
    seconds: float
    n_chunks: int
    usage: Usage
    records: list[SummaryRecord] = field(default_factory=list)
    document: Document | None = None

    @property
    def degraded_summaries(self) -> int:
        return sum(1 for r in self.records if r.degraded)

    def as_json(self) -> dict:
        return {
            "run_id": self.run_id, "status": self.status, "method": self.method, "model": self.model,
            "summary": self.summary, "summary_words": count_words(self.summary), "n_chunks": self.n_chunks,
            "n_summaries": len(self.records), "degraded_summaries": self.degraded_summaries,
            "seconds": round(self.seconds, 3), "usage": self.usage.as_dict(),
        }


def make_backend(config: RunConfig) -> LLMBackend | None:
    if config.method == "extractive":
        return None
    return resolve(
        config.model, base_url=config.base_url, context_window=config.context_window,
        timeout_s=config.timeout_s, max_retries=config.max_retries,
    )


def count_tokens_for(backend: LLMBackend | None):
    if backend is not None:
        # A server's /tokenize costs a request per text: chunking packs with a local estimate beside
        # it, and counts chunks by their position in the document's tokens where the server gives them.
        estimate = getattr(backend, "token_estimate", None)
        if not estimate:
            return backend.count_tokens
        return CostlyCounter(backend.count_tokens, estimate, getattr(backend, "token_starts", None))
    from pipelines.llm.tokenizers import count_cl100k

    return count_cl100k


def check_budgets(config: RunConfig, backend: LLMBackend) -> None:
    """Fail before any call when a chunk plus its answer cannot fit the context."""
    settings = config.settings()
    needed = config.chunk_size + settings.summary_tokens + PROMPT_OVERHEAD_TOKENS + CONTEXT_SAFETY_TOKENS
    if config.method == "incremental":
        needed += settings.summary_tokens  # the running summary rides along
    if needed > backend.context_window:
        raise LLMConfigError(
            f"--chunk-size {config.chunk_size} with --summary-words {config.summary_words} needs about {needed} "
            f"tokens of context but {backend.model} has {backend.context_window}; lower one of them"
            + (" or raise --context-window" if backend.backend in ("llamacpp", "openai") else "")
        )


def make_chunks(document: Document, config: RunConfig, count_tokens) -> list[Chunk]:
    if config.chunker == "fixed":
        return fixed_window_chunks(document.text, config.chunk_size, count_tokens, overlap=config.overlap)
    titles = {s.start: s.title for s in document.sections}
    return chunk_text(document.text, config.chunk_size, count_tokens, document.boundaries, titles)


def summarize_file(
    path: str | Path,
    config: RunConfig,
    store: Store,
    *,
    backend: LLMBackend | None = None,
    progress: Progress | None = None,
    on_call=None,
    password: str | None = None,
) -> RunResult:
    config.validate()
    document = load_document(path, kind=config.kind, password=password)
    if backend is None:
        backend = make_backend(config)
    return summarize_document(document, config, store, backend=backend, progress=progress, on_call=on_call)


def summarize_document(
    document: Document,
    config: RunConfig,
    store: Store,
    *,
    backend: LLMBackend | None,
    progress: Progress | None = None,
    on_call=None,
    executor_for: Callable[..., Executor] | None = None,
    extra_params: dict | None = None,
    run_id: str | None = None,
) -> RunResult:
    """The one orchestration of a run: budgets, rows, chunks, compression and
    the workflow. `executor_for(run_id, width=N)` gives the executor of the
    run's steps, N of them at a time (`step_width`; default: N threads of this
    process); whoever runs the steps, their calls land in `llm_calls` under
    the run as they finish."""
    config.validate()
    if backend is not None:
        check_budgets(config, backend)
    progress = progress or Progress()
    run_id = run_id or new_id()
    started = time.time()
    with store.lingering():  # the run's units of work share a connection to a DuckDB file
        reap_dead_runs(store)
        record_document(store, document)
        start_run(store, run_id, document, config, backend, extra=extra_params)
        try:
            chunks = make_chunks(document, config, count_tokens_for(backend))
            store.insert_rows("chunks", [chunk_row(run_id, c) for c in chunks])
            if backend is None:
                records = _extractive(document, config, chunks)
            else:
                llm = RecordingLLM(backend, DuckDBJournal(store), run_id=run_id, on_call=on_call)
                width = step_width(config, backend)
                executor = executor_for(run_id, width=width) if executor_for else ThreadExecutor(width)
                if config.compress != "none":
                    chunks = compress_chunks(store, run_id, document, chunks, config, llm, executor, width)
                records = summarizer_for(config, llm, document.kind, progress).run(chunks, executor)
            final = next(r for r in records if r.is_final)
            # Any step that kept no valid answer degrades the run (a discarded compression does not).
            status = "degraded" if any(r.degraded and r.kept for r in records) else "ok"
            store.insert_rows("summaries", [summary_row(run_id, r) for r in records])
            seconds = time.time() - started
            finish_run(store, run_id, status, seconds, len(chunks), records, final.text)
        except BaseException as exc:
            fail_run(store, run_id, exc, time.time() - started)
            raise
        if config.citations:  # after the run is stored: a citation that fails loses no summary
            from pipelines.citations import cite_run

            cite_run(store, run_id)
        try:
            usage = run_usage(store, run_id)
        except StoreBusy:  # finished and stored (or spooled); this process's own count stands in
            usage = llm.usage if backend is not None else Usage()
        return RunResult(
            run_id=run_id, status=status, summary=final.text, method=config.method, model=_model_name(config, backend),
            seconds=seconds, n_chunks=len(chunks), usage=usage, records=records, document=document,
        )


def step_width(config: RunConfig, backend: LLMBackend) -> int:
    """How many independent steps run side by side: `config.concurrency`, but
    no more than the backend serves at once (a local model: one, so that each
    step's attempts follow each other and reuse its prompt in the KV cache)."""
    limit = getattr(backend, "parallel_calls", None)
    return min(config.concurrency, limit) if limit else config.concurrency


def compress_chunks(store: Store, run_id: str, document: Document, chunks: list[Chunk], config: RunConfig,
                    llm: RecordingLLM, executor: Executor, width: int) -> list[Chunk]:
    from pipelines.compress.chunk_compression import ChunkCompressor

    # `width` calls in flight in all: split between the chunks and the rewrites inside each.
    workers = max(1, min(width, len(chunks)))
    compressor = ChunkCompressor(
        llm, method=config.compress, ratio=config.compress_ratio, kind=document.kind, language=document.language,
        query=config.compress_query, concurrency=max(1, width // workers),
        scorer_model=config.compress_model,
    )
    pairs = compressor.run(chunks, executor)
    record_compression(store, run_id, [row for _, row in pairs])
    return [chunk for chunk, _ in pairs]


def record_compression(store: Store, run_id: str, rows: list[dict]) -> None:
    """The chunks' rows, and the run's totals under the method(s) actually used (what `auto` chose)."""
    store.insert_rows("compressed_chunks", [{"run_id": run_id, **row} for row in rows])
    method = "+".join(sorted({row["method"] for row in rows}))
    store.execute(
        "UPDATE runs SET compression = ?, tokens_before_compression = ?, tokens_after_compression = ? WHERE run_id = ?",
        [method, sum(r["original_tokens"] for r in rows), sum(r["compressed_tokens"] for r in rows), run_id],
    )


def summarizer_for(config: RunConfig, llm: RecordingLLM, kind: str, progress: Progress):
    from pipelines.summarize.hierarchical import HierarchicalSummarizer
    from pipelines.summarize.incremental import IncrementalSummarizer

    cls = HierarchicalSummarizer if config.method == "hierarchical" else IncrementalSummarizer
    return cls(llm, config.settings(), kind=kind, progress=progress)


def _extractive(document: Document, config: RunConfig, chunks: list[Chunk]) -> list[SummaryRecord]:
    from pipelines.llm.tokenizers import count_cl100k
    from pipelines.summarize.extractive import extractive_summary

    return [extractive_summary(document.text, config.summary_words, len(chunks), count_tokens=count_cl100k)]


def _model_name(config: RunConfig, backend: LLMBackend | None) -> str:
    if backend is None:
        from pipelines.summarize.extractive import MODEL_NAME

        return MODEL_NAME
    return f"{backend.backend}:{backend.model}"


# -- rows -------------------------------------------------------------------


def record_document(store: Store, document: Document) -> None:
    row = {
        "doc_id": document.doc_id, "path": str(Path(document.path).resolve()), "title": document.title,
        "kind": document.kind, "language": document.language, "encoding": document.encoding,
        "n_chars": len(document.text), "n_words": count_words(document.text),
        "sections": [dataclasses.asdict(s) for s in document.sections], "first_seen": utc(),
        "format": document.format, "pages": document.pages, "extractor": document.extractor,
        "extractor_version": document.extractor_version, "metadata": document.metadata or None,
    }
    store.insert_rows("documents", [row], ignore_conflicts=True)


def start_run(
    store: Store, run_id: str, document: Document, config: RunConfig, backend: LLMBackend | None, extra: dict | None = None
) -> None:
    params = {**dataclasses.asdict(config), "backend": backend.describe() if backend else None, **(extra or {})}
    store.insert_rows("runs", [{
        "run_id": run_id, "doc_id": document.doc_id, "document_path": str(Path(document.path).resolve()),
        "method": config.method, "backend": backend.backend if backend else None,
        "model": _model_name(config, backend), "chunk_size": config.chunk_size,
        "summary_words": config.summary_words, "params": json.loads(redact(json.dumps(params))),
        "status": "running", "started_at": utc(), "pid": os.getpid(), "host": socket.gethostname(),
    }])


INTERRUPTED = "interrupted: the process died before the run finished"


def reap_dead_runs(store: Store) -> int:
    """Mark `running` runs whose process on this host is gone (killed) as
    `interrupted` (a re-run resumes their work from the journal); bookkeeping
    that waits for the next run when the file is held."""
    try:
        rows = store.execute("SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?",
                             [socket.gethostname()])
        dead = [run_id for run_id, pid in rows if not alive(pid)]
        if dead:
            store.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE list_contains(?, run_id)",
                          [INTERRUPTED, dead])
    except StoreBusy:
        return 0
    return len(dead)


def alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this host."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def chunk_row(run_id: str, chunk: Chunk) -> dict:
    return {
        "run_id": run_id, "idx": chunk.idx, "start_char": chunk.start, "end_char": chunk.end,
        "n_tokens": chunk.n_tokens, "section": chunk.section, "text": chunk.text,
    }


def summary_row(run_id: str, record: SummaryRecord) -> dict:
    return {
        "summary_id": new_id(), "run_id": run_id, "level": record.level, "idx": record.idx, "kind": record.kind,
        "text": record.text, "n_words": record.n_words, "n_tokens": record.n_tokens,
        "token_limit": record.token_limit, "word_limit": record.word_limit, "attempts": record.attempts,
        "degraded": record.degraded, "salvaged": record.salvaged, "note": record.note,
        "first_chunk": record.first_chunk, "last_chunk": record.last_chunk,
        "request_hash": record.request_hash, "is_final": record.is_final, "created_at": utc(),
    }


_FRESH = "status = 'ok' AND NOT cached"
# What a run's calls cost, from the journal (whoever made the calls), as the columns of `runs`.
# (llm_call_rows: the rows of llm_calls without their texts, which these sums do not need.)
_USAGE_SELECT = (
    f"SELECT count(*) FILTER ({_FRESH}) AS calls, count(*) FILTER (status = 'ok' AND cached) AS hits, "
    f"count(*) FILTER (status <> 'ok') AS errors, coalesce(sum(input_tokens) FILTER ({_FRESH}), 0) AS input_tokens, "
    f"coalesce(sum(cached_input_tokens) FILTER ({_FRESH}), 0) AS cached_input, "
    f"coalesce(sum(output_tokens) FILTER ({_FRESH}), 0) AS output_tokens, "
    f"coalesce(sum(cost_usd) FILTER ({_FRESH}), 0) AS cost, coalesce(sum(latency_s) FILTER ({_FRESH}), 0) AS seconds "
    "FROM llm_call_rows WHERE run_id = ?"
)
# An UPDATE of `runs` sets these from `_USAGE_SELECT` (as `u`) when it is applied, so an update that
# waited in the spool counts the calls that waited before it.
_USAGE_FROM_JOURNAL = (
    "llm_calls = u.calls, cache_hits = u.hits, llm_errors = u.errors, input_tokens = u.input_tokens, "
    "cached_input_tokens = u.cached_input, output_tokens = u.output_tokens, cost_usd = u.cost, llm_seconds = u.seconds"
)


def _usage_select(run_id_param: str) -> str:
    """`_USAGE_SELECT` with a numbered parameter: duckdb 1.5 numbers an UPDATE's `?` in its FROM
    before those of its SET, duckdb 2 in the order written; `$n` means the same on both."""
    return _USAGE_SELECT.replace("?", run_id_param)


def run_usage(store: Store, run_id: str) -> Usage:
    """What the run's calls cost, from the journal (whoever made the calls)."""
    ((calls, hits, errors, input_tokens, cached_input, output_tokens, cost, seconds),) = store.execute(
        _USAGE_SELECT, [run_id])
    return Usage(calls, hits, errors, input_tokens, cached_input, output_tokens, cost, seconds)


def finish_run(store, run_id, status, seconds, n_chunks, records, final_text: str) -> None:
    """The run's row as it ended, its usage summed from the journal."""
    store.execute(
        f"UPDATE runs SET status = $1, finished_at = $2, seconds = $3, n_chunks = $4, n_summaries = $5, "
        f"degraded_summaries = $6, final_summary = $7, {_USAGE_FROM_JOURNAL} FROM ({_usage_select('$8')}) u "
        f"WHERE runs.run_id = $8",
        [status, utc(), seconds, n_chunks, len(records), sum(r.degraded for r in records), final_text, run_id],
    )


def fail_run(store: Store, run_id: str, exc: BaseException, seconds: float) -> None:
    if isinstance(exc, KeyboardInterrupt):
        reason = "interrupted"
    elif type(exc).__name__ == "Terminated":
        reason = "terminated (SIGTERM)"
    elif getattr(exc, "reason", None) == "budget":  # pipelines.budget.BudgetExceeded: "budget: ..."
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
    try:  # spooled when the file is held: the run never stays `running`
        store.execute(
            f"UPDATE runs SET status = 'failed', error = $1, finished_at = $2, seconds = $3, {_USAGE_FROM_JOURNAL} "
            f"FROM ({_usage_select('$4')}) u WHERE runs.run_id = $4",
            [redact(reason)[:1000], utc(), seconds, run_id],
        )
    except Exception:  # the original error matters more than the bookkeeping
        pass

