"""The `summarize-document` flow (`summarize_document_flow`): the library's
run, each step a Prefect task.

The flow runs `pipelines.runner.summarize_document`, the same orchestration
the `summarize` command runs, with an executor that makes each workflow step
(a chunk summary, a compression, a merge, an update) a Prefect task on the
flow's task runner (threads, or a Dask cluster). The flow process is the one
writer of the DuckDB file; tasks get the earlier answers they may replay as
data. The DuckDB run id is attached to the flow run as an artifact, and the
Prefect flow run id is stored in the run's params.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.executor import PrefectExecutor
from flows.limits import configured_limit
from flows.redacting import flow
from flows.runners import task_runner_for
from flows.secrets import password_from_secret
from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_SUMMARY_WORDS
from pipelines.documents import load_document
from pipelines.runner import RunConfig, make_backend, summarize_document
from pipelines.store import Store, call_records, document_calls


def _run_name() -> str:
    params = flow_run.parameters
    return f"{Path(params['path']).name} · {params.get('method', 'hierarchical')} · {params.get('model', DEFAULT_MODEL)}"


@flow(name="summarize-document", flow_run_name=_run_name, log_prints=True)
def summarize_document_flow(
    path: str,
    method: str = "hierarchical",
    model: str = DEFAULT_MODEL,
    chunk_size: int = DEFAULT_CHUNK_TOKENS,
    summary_words: int = DEFAULT_SUMMARY_WORDS,
    compress: str = "none",
    compress_ratio: float = 0.5,
    compress_query: str = "",
    references: list[str] | None = None,
    metrics: list[str] | None = None,
    db: str | None = None,
    concurrency: int = 4,
    base_url: str | None = None,
    context_window: int | None = None,
    dask_address: str | None = None,
    judge_model: str | None = None,
    judge_concurrency: int = 1,
    db_password_secret: str | None = None,
) -> dict:
    """Summarize one document and store everything in DuckDB; returns the run's JSON.
    `judge_model` judges BooookScore and faithfulness (default: the embedded instruct model);
    `db_password_secret` names the Prefect Secret block holding a lake's catalog password."""
    config = RunConfig(
        method=method, model=model, base_url=base_url, context_window=context_window, chunk_size=chunk_size,
        summary_words=summary_words, concurrency=concurrency, compress=compress, compress_ratio=compress_ratio,
        compress_query=compress_query,
    )
    config.validate()
    password_from_secret(db_password_secret)
    store = Store(db)
    document = load_document(path, kind=config.kind)
    backend = make_backend(config)
    replay = call_records(document_calls(store, document.doc_id))
    limit = configured_limit(backend.backend) if backend is not None else None
    with task_runner_for(dask_address, concurrency) as runner:
        result = summarize_document(document, config, store, backend=backend,
                                    executor_for=partial(PrefectExecutor, runner, store, config=config,
                                                         replay=replay, limit=limit),
                                    extra_params={"prefect_flow_run_id": str(flow_run.id)})
    summary = result.as_json()
    if metrics:
        from flows.evaluate_flow import judge_options

        summary["scores"] = score_task(store, result.run_id, metrics, references,
                                       judge_options(judge_model, judge_concurrency))
    _attach_run(summary, store)
    get_run_logger().info("run %s %s: %d chunks, %d LLM calls (%d cached)", result.run_id, result.status,
                          result.n_chunks, result.usage.calls, result.usage.cache_hits)
    return summary


def score_task(store: Store, run_id: str, metrics: list[str], references: list[str] | None, options) -> dict:
    """Scores are written by the flow process, the database's one writer."""
    from scoring import ScoreJob, score_runs

    rows = score_runs(store, [ScoreJob(run_id, list(references) if references else None)], metrics, options=options)
    return {f"{r['metric']}_{r['variant']}": r["value"] for r in rows if r.get("aggregate") in (None, "max") and r.get("reference_id") is None}


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
