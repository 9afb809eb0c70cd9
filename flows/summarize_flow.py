"""The `summarize_document` flow: load -> chunk -> summarize -> persist.

The flow process is the only one that opens the DuckDB file. Level 0 of
hierarchical merging (and chunk compression) runs as concurrent tasks, at
most `concurrency` at a time; merges and incremental updates are sequential
by nature. For API backends a Prefect global concurrency limit bounds the
calls of all flows together: the flow holds as many of its slots as it runs
tasks at once, for the whole group, rather than each task taking a slot per
call (each acquisition is a round trip to the Prefect API, and under
contention a Retry-After wait). The DuckDB run id is attached to the flow
run as an artifact, and the Prefect flow run id is stored in the run's params.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.tasks import (
    StepResult,
    chunk_task,
    compress_chunk_task,
    extractive_task,
    incremental_step_task,
    load_document_task,
    merge_task,
    summarize_chunk_task,
)
from pipelines.llm.recording import MemoryJournal, RecordingLLM, Usage, new_id
from pipelines.runner import (
    RunConfig,
    check_budgets,
    chunk_row,
    fail_run,
    finish_run,
    make_backend,
    reap_dead_runs,
    record_compression,
    record_document,
    start_run,
    summarizer_for,
    summary_row,
)
from pipelines.store import Store, export_call_snapshot, record_calls
from pipelines.summarize.common import SummaryRecord
from pipelines.summarize.incremental import current_summary

API_BACKENDS = ("openai", "anthropic")


def _run_name() -> str:
    params = flow_run.parameters
    return f"{Path(params['path']).name} · {params.get('method', 'hierarchical')} · {params.get('model', 'llamacpp')}"


class StepFailed(RuntimeError):
    """A step failed; the calls of the steps that finished are still stored."""


@contextlib.contextmanager
def _api_slots(limit_name: str | None, wanted: int):
    """Hold up to `wanted` slots of the global limit while a group of tasks
    runs; yields how many tasks may run at once (no more than the limit
    allows now, should another flow have lowered it)."""
    if not limit_name:
        yield wanted
        return
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        allowed = client.read_global_concurrency_limit_by_name(limit_name).limit
    held = max(1, min(wanted, allowed))
    with concurrency(limit_name, occupy=held):
        yield held


def _submit_bounded(task, arguments: list[tuple], width: int) -> list:
    """task.submit(*args) for each, never more than `width` of them running at once."""
    futures: list = []
    for args in arguments:
        if len(futures) >= width:
            futures[-width].wait()  # with every earlier one waited on before: at most width-1 still running
        futures.append(task.submit(*args))
    return futures


def _each_chunk(task, arguments: list[tuple], width: int, limit_name: str | None, calls: list,
                what: str) -> list[StepResult]:
    """One task per chunk, `width` at a time; every finished step's calls are
    kept (for the store) even when others failed, then the first failure is raised."""
    with _api_slots(limit_name, min(width, len(arguments))) as width:
        done, errors = _gather(_submit_bounded(task, arguments, width))
    for step in done:
        calls.extend(step.calls)
    if errors:
        raise StepFailed(f"{len(errors)} of {len(arguments)} {what} failed: {errors[0]}") from errors[0]
    return done


def _gather(futures) -> tuple[list[StepResult], list[BaseException]]:
    done, errors = [], []
    for future in futures:
        try:
            done.append(future.result())
        except Exception as exc:  # noqa: BLE001 - collected, reported below
            errors.append(exc)
    return done, errors


@flow(name="summarize-document", flow_run_name=_run_name, log_prints=True)
def summarize_document(
    path: str,
    method: str = "hierarchical",
    model: str = "llamacpp",
    chunk_size: int = 2048,
    summary_words: int = 585,
    compress: str = "none",
    compress_ratio: float = 0.5,
    compress_query: str = "",
    references: list[str] | None = None,
    metrics: list[str] | None = None,
    db: str | None = None,
    concurrency: int = 4,
    base_url: str | None = None,
    context_window: int | None = None,
    resume: bool = True,
) -> dict:
    """Summarize one document and store everything in DuckDB; returns the run's JSON."""
    config = RunConfig(
        method=method, model=model, base_url=base_url, context_window=context_window, chunk_size=chunk_size,
        summary_words=summary_words, concurrency=concurrency, compress=compress, compress_ratio=compress_ratio,
        compress_query=compress_query,
    )
    config.validate()
    logger = get_run_logger()
    store = Store(db)
    started = time.time()
    document = load_document_task(path, config.kind)
    backend = make_backend(config)
    if backend is not None:
        check_budgets(config, backend)
    run_id = new_id()
    reap_dead_runs(store)
    record_document(store, document)
    start_run(store, run_id, document, config, backend, extra={"prefect_flow_run_id": str(flow_run.id)})
    calls: list = []
    try:
        chunks = chunk_task(document, config)
        store.insert_rows("chunks", [chunk_row(run_id, c) for c in chunks])
        steps = _options(resume)
        if backend is None:
            records = extractive_task.with_options(**steps)(document, config, len(chunks)).records
        else:
            snapshot = export_call_snapshot(
                store, store.path.parent / ".longsum-snapshots" / f"{run_id}.parquet", backend.backend, backend.model
            )
            limit_name = _concurrency_limit(backend.backend, concurrency)
            if compress != "none":
                chunks = _compress(store, document, chunks, config, run_id, snapshot, limit_name, calls, steps)
            local = summarizer_for(config, RecordingLLM(backend, MemoryJournal()), document.kind, progress=None)
            workflow = _hierarchical if method == "hierarchical" else _incremental
            records = workflow(local, chunks, config, document.kind, run_id, snapshot, limit_name, calls, steps)
        final = next(r for r in records if r.is_final)
        status = "degraded" if final.degraded else "ok"
        usage = Usage.from_records(record_calls(store, run_id, calls))
        store.insert_rows("summaries", [summary_row(run_id, r) for r in records])
        finish_run(store, run_id, status, time.time() - started, len(chunks), records, usage, final.text)
    except BaseException as exc:
        written = record_calls(store, run_id, calls)
        fail_run(store, run_id, exc, time.time() - started, Usage.from_records(written))
        raise
    result = {
        "run_id": run_id, "status": status, "method": method, "model": model, "summary": final.text,
        "n_chunks": len(chunks), "usage": usage.as_dict(), "seconds": round(time.time() - started, 3),
    }
    if metrics:
        result["scores"] = score_task(store, run_id, metrics, references)
    _attach_run(result, store)
    logger.info("run %s %s: %d chunks, %d LLM calls (%d cached)", run_id, status, len(chunks), usage.calls, usage.cache_hits)
    return result


def score_task(store: Store, run_id: str, metrics: list[str], references: list[str] | None) -> dict:
    """Scores are written by the flow process, the database's one writer."""
    from scoring import score_run

    rows = score_run(store, run_id, metrics, references=references)
    return {f"{r['metric']}_{r['variant']}": r["value"] for r in rows if r.get("aggregate") in (None, "max") and r.get("reference_id") is None}


def _options(resume: bool) -> dict:
    """Task options: `resume=False` recomputes every step instead of replaying cached results."""
    return {} if resume else {"refresh_cache": True}


def _hierarchical(local, chunks, config, kind, run_id, snapshot, limit_name, calls, steps) -> list[SummaryRecord]:
    limits = local.plan_limits(len(chunks))
    done = _each_chunk(
        summarize_chunk_task.with_options(**steps),
        [(chunk, len(chunks), limits[0], config, kind, run_id, snapshot) for chunk in chunks],
        config.concurrency, limit_name, calls, "chunk summaries",
    )
    current = [step.records[0] for step in done]
    records = list(current)
    level = 1
    with _api_slots(limit_name, 1):  # each merge reads the one before: one call at a time
        while len(current) > 1:
            out_limit, groups = local.plan_level(current, level, limits)
            merged: list[SummaryRecord] = []
            for idx, group in enumerate(groups):
                context = local.context_from(merged[-1].text, out_limit) if merged else ""
                step = merge_task.with_options(**steps).submit(
                    group, level, idx, out_limit, context, config, kind, run_id, snapshot
                ).result()
                calls.extend(step.calls)
                merged.extend(step.records)
            records.extend(merged)
            current = merged
            level += 1
    current[0].is_final = True
    return records


def _compress(store, document, chunks, config, run_id, snapshot, limit_name, calls, steps):
    done = _each_chunk(
        compress_chunk_task.with_options(**steps),
        [(chunk, document, config, run_id, snapshot) for chunk in chunks],
        config.concurrency, limit_name, calls, "chunk compressions",
    )
    record_compression(store, run_id, [step.row for step in done])
    return [step.chunk for step in done]


def _incremental(local, chunks, config, kind, run_id, snapshot, limit_name, calls, steps) -> list[SummaryRecord]:
    records: list[SummaryRecord] = []
    running = None
    with _api_slots(limit_name, 1):  # each update reads the one before: one call at a time
        for chunk in chunks:
            step = incremental_step_task.with_options(**steps).submit(
                running, chunk, len(chunks), config, kind, run_id, snapshot
            ).result()
            calls.extend(step.calls)
            records.extend(step.records)
            running = current_summary(step.records)
    running.is_final = True
    return records


def _concurrency_limit(backend: str, limit: int) -> str | None:
    """A Prefect global concurrency limit shared by every flow calling this API."""
    if backend not in API_BACKENDS:
        return None  # a local model runs one call at a time anyway
    from prefect.client.orchestration import get_client

    name = f"longsum-{backend}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)
    return name


def _attach_run(result: dict, store: Store) -> None:
    """Link the Prefect flow run to its DuckDB row (artifact keys: lowercase, dashes)."""
    create_markdown_artifact(
        key="longsum-run",
        markdown=(
            f"### longsum run `{result['run_id']}`\n\n"
            f"* status: **{result['status']}**, {result['n_chunks']} chunks, "
            f"{result['usage']['calls']} LLM calls ({result['usage']['cache_hits']} cached)\n"
            f"* database: `{store.path}`\n\n"
            f"```sql\nSELECT * FROM runs WHERE run_id = '{result['run_id']}';\n```\n"
        ),
        description=f"DuckDB run {result['run_id']}",
    )
