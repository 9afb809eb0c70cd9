"""Prefect tasks, each wrapping one library step.

LLM tasks build their backend from the (picklable) run config inside the
worker, look calls up in a Parquet snapshot of the store's `llm_calls`, and
return their summary records together with the call records they made: they
never open the DuckDB file, whose one writer is the flow process. Results
are persisted and cached on their inputs, so re-running a flow after a crash
replays finished steps instead of calling the LLM again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from pipelines.chunking import Chunk
from pipelines.documents import Document, load_document
from pipelines.llm.base import LLMConfigError, PromptTooLongError
from pipelines.llm.recording import RecordingLLM
from pipelines.runner import RunConfig, make_backend, make_chunks, count_tokens_for
from pipelines.store import SnapshotJournal
from pipelines.summarize.common import SummaryRecord

# What identifies a step's work: not the run it belongs to, nor where the
# snapshot lies (both differ between a crashed run and its re-run).
STEP_CACHE = (INPUTS + TASK_SOURCE) - "run_id" - "snapshot" - "limit_name"
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


@contextlib.contextmanager
def _slot(limit_name: str | None):
    """Hold one slot of the flow's global concurrency limit (API backends)."""
    if not limit_name:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(limit_name, occupy=1):
        yield


def _llm(config: RunConfig, run_id: str, snapshot: str | None) -> tuple[RecordingLLM, SnapshotJournal]:
    journal = SnapshotJournal(snapshot)
    return RecordingLLM(make_backend(config), journal, run_id=run_id), journal


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
    chunk: Chunk, document: Document, config: RunConfig, run_id: str, snapshot: str | None, limit_name: str | None = None,
) -> CompressedChunk:
    from pipelines.runner import compress_chunk, compressed_chunk

    llm, journal = _llm(config, run_id, snapshot)
    with _slot(limit_name):
        result = compress_chunk(chunk, document, config, llm)
    new_chunk, row = compressed_chunk(chunk, result)
    return CompressedChunk(new_chunk, row, journal.records)


@llm_task("summarize-chunk", "chunk {chunk.idx}")
def summarize_chunk_task(
    chunk: Chunk, n_chunks: int, token_limit: int, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None, limit_name: str | None = None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    with _slot(limit_name):
        record = _summarizer(config, llm, kind).summarize_chunk(chunk, n_chunks, token_limit)
    return StepResult([record], journal.records)


@llm_task("merge", "merge level {level} #{idx}")
def merge_task(
    group: list[SummaryRecord], level: int, idx: int, out_limit: int, context: str, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None, limit_name: str | None = None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    with _slot(limit_name):
        record = _summarizer(config, llm, kind).merge(group, level, idx, out_limit, context)
    return StepResult([record], journal.records)


@llm_task("incremental-step", "update with chunk {chunk.idx}")
def incremental_step_task(
    running: SummaryRecord | None, chunk: Chunk, n_chunks: int, config: RunConfig, kind: str,
    run_id: str, snapshot: str | None, limit_name: str | None = None,
) -> StepResult:
    llm, journal = _llm(config, run_id, snapshot)
    with _slot(limit_name):
        produced = _summarizer(config, llm, kind).step(running, chunk, n_chunks)
    return StepResult(produced, journal.records)


@task(name="extractive", task_run_name="extractive baseline", cache_policy=STEP_CACHE, persist_result=True)
def extractive_task(document: Document, config: RunConfig, n_chunks: int) -> StepResult:
    from pipelines.llm.tokenizers import count_cl100k
    from pipelines.summarize.extractive import extractive_summary

    return StepResult([extractive_summary(document.text, config.summary_words, n_chunks, count_tokens=count_cl100k)])
