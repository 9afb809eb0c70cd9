"""Prefect tasks, each wrapping one library step.

LLM tasks build their backend from the (picklable) run config inside the
worker, look calls up in a Parquet snapshot of the store's `llm_calls`, and
return their summary records together with the call records they made: they
never open the DuckDB file, whose one writer is the flow process. Results
are persisted and cached on their inputs, so re-running a flow after a crash
replays finished steps instead of calling the LLM again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from pipelines.chunking import Chunk
from pipelines.documents import Document, load_document
from pipelines.llm import parse_spec
from pipelines.llm.base import LLMConfigError, PromptTooLongError
from pipelines.llm.recording import RecordingLLM
from pipelines.runner import RunConfig, make_backend, make_chunks, count_tokens_for
from pipelines.store import SnapshotJournal
from pipelines.summarize.common import SummaryRecord

# What identifies a step's work: not the run it belongs to, nor where the
# snapshot lies (both differ between a crashed run and its re-run).
STEP_CACHE = (INPUTS + TASK_SOURCE) - "run_id" - "snapshot"
LLM_RETRIES = 2
LLM_RETRY_DELAYS = [2, 10]
RESULT_TTL = timedelta(days=7)


@dataclass
class StepResult:
    records: list[SummaryRecord]
    calls: list = field(default_factory=list)  # CallRecord, for the writer


def _retryable(task, task_run, state) -> bool:
    """Configuration problems (bad key, prompt too long) fail at once."""
    try:
        state.result()
    except (LLMConfigError, PromptTooLongError):
        return False
    except Exception:  # noqa: BLE001 - anything else is worth another try
        return True
    return True


def llm_task(name: str, run_name: str):
    return task(
        name=name, task_run_name=run_name, retries=LLM_RETRIES, retry_delay_seconds=LLM_RETRY_DELAYS,
        retry_condition_fn=_retryable, cache_policy=STEP_CACHE, cache_expiration=RESULT_TTL, persist_result=True,
    )


# One API backend (one SDK client with its connection pool) per worker process
# and configuration, as the SDKs recommend: a new client per task costs an SSL
# context and a fresh connection (a TLS handshake against a real API) per call.
_API_CLIENT_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
_api_backends: dict[tuple, object] = {}
_api_backends_lock = threading.Lock()


def _backend(config: RunConfig):
    if parse_spec(config.model)[0] not in ("openai", "anthropic"):
        return make_backend(config)  # llama.cpp shares its loaded model per process already
    # The keys are part of the identity (a changed key needs a new client) but are kept only as a digest.
    environment = hashlib.sha256("\0".join(os.environ.get(name, "") for name in _API_CLIENT_ENV).encode()).hexdigest()
    key = (config.model, config.base_url, config.context_window, config.timeout_s, config.max_retries, environment)
    with _api_backends_lock:
        if key not in _api_backends:
            _api_backends[key] = make_backend(config)
        return _api_backends[key]


def _llm(config: RunConfig, run_id: str, snapshot: str | None) -> tuple[RecordingLLM, SnapshotJournal]:
    journal = SnapshotJournal(snapshot)
    return RecordingLLM(_backend(config), journal, run_id=run_id), journal


def _summarizer(config: RunConfig, llm: RecordingLLM, kind: str):
    from pipelines.runner import summarizer_for

    return summarizer_for(config, llm, kind, progress=None)


@task(name="load-document", task_run_name="load {path}")
def load_document_task(path: str, kind: str | None = None) -> Document:
    return load_document(path, kind=kind)


@task(name="chunk", task_run_name="chunk ({config.chunk_size} tokens)")
def chunk_task(document: Document, config: RunConfig) -> list[Chunk]:
    backend = make_backend(config)
    return make_chunks(document, config, count_tokens_for(backend))


@dataclass
class CompressedChunk:
    chunk: Chunk  # what the summarizer reads
    row: dict  # its `compressed_chunks` row
    calls: list = field(default_factory=list)


@llm_task("compress-chunk", "compress chunk {chunk.idx}")
def compress_chunk_task(
    chunk: Chunk, document: Document, config: RunConfig, run_id: str, snapshot: str | None,
) -> CompressedChunk:
    from pipelines.runner import compress_chunk, compressed_chunk

    llm, journal = _llm(config, run_id, snapshot)
    result = compress_chunk(chunk, document, config, llm)
    new_chunk, row = compressed_chunk(chunk, result)
    return CompressedChunk(new_chunk, row, journal.records)


@llm_task("summarize-chunk", "chunk {chunk.idx}")
def summarize_chunk_task(
    chunk: Chunk, n_chunks: int, token_limit: int, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    record = _summarizer(config, llm, kind).summarize_chunk(chunk, n_chunks, token_limit)
    return StepResult([record], journal.records)


@llm_task("merge", "merge level {level} #{idx}")
def merge_task(
    group: list[SummaryRecord], level: int, idx: int, out_limit: int, context: str, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    record = _summarizer(config, llm, kind).merge(group, level, idx, out_limit, context)
    return StepResult([record], journal.records)


@llm_task("incremental-step", "update with chunk {chunk.idx}")
def incremental_step_task(
    running: SummaryRecord | None, chunk: Chunk, n_chunks: int, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    produced = _summarizer(config, llm, kind).step(running, chunk, n_chunks)
    return StepResult(produced, journal.records)


@task(name="extractive", task_run_name="extractive baseline", cache_policy=STEP_CACHE, persist_result=True)
def extractive_task(document: Document, config: RunConfig, n_chunks: int) -> StepResult:
    from pipelines.llm.tokenizers import count_cl100k
    from pipelines.summarize.extractive import extractive_summary

    return StepResult([extractive_summary(document.text, config.summary_words, n_chunks, count_tokens=count_cl100k)])
