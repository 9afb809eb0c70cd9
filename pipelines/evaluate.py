"""The evaluation harness: documents x configurations, summarized then scored.

It sits above summarizing (`pipelines.runner`) and scoring (`scoring`), which
know nothing of each other. `evaluate_document` is the one per-document
function; `summarize eval`, the in-process `evaluate` loop and the
`evaluate_corpus` flow all call it, with one failure rule: a document that
cannot be read or summarized is recorded as a failed run with its reason,
and every other document completes. Scoring a finished run that then fails
keeps the run and records why in the outcome.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from pipelines.corpus import CorpusItem
from pipelines.documents import load_document
from pipelines.llm.recording import new_id
from pipelines.runner import RunConfig, make_backend, summarize_document
from pipelines.secrets import redact
from pipelines.store import Store, utc

BASELINE = "extractive"
SCORE_COLUMNS = (
    ("rouge1_f", "rouge1"), ("rouge2_f", "rouge2"), ("rougeL_f", "rougeL"), ("rougeLsum_f", "rougeLsum"),
    ("bertscore_f1", "bertscore_f1"), ("booookscore", "booookscore"), ("faithfulness_yes", "faithful_yes"),
    ("faithfulness_supported", "faithful_supported"), ("coverage_deciles", "coverage_deciles"),
    ("coverage_end_share", "coverage_end_share"),
)


@dataclass
class Outcome:
    """What became of one document under one configuration."""

    document: str
    configuration: str
    status: str  # ok | degraded | failed
    run_id: str
    seconds: float
    error: str | None = None  # why it failed, or why its scoring failed
    scores: dict = field(default_factory=dict)


def config_label(config: RunConfig) -> str:
    """method x model x chunk size x compression: how tables name a configuration."""
    if config.method == BASELINE:
        return f"{BASELINE} (baseline)"
    parts = [config.method, config.model, f"chunk {config.chunk_size}", f"{config.summary_words} words"]
    if config.compress != "none":
        parts.append(f"{config.compress} {config.compress_ratio:g}")
    return " · ".join(parts)


def load_item(item: CorpusItem, config: RunConfig, store: Store) -> CorpusItem | Outcome:
    """The item with its document read, or, when it cannot be read, the failed
    outcome (its `runs` row written)."""
    if item.document is not None:
        return item
    started = time.time()
    run_id = new_id()
    try:
        document = load_document(item.path, kind=config.kind)
    except Exception as exc:  # noqa: BLE001 - the failure rule: record it, go on
        reason = f"cannot read: {_reason(exc)}"
        record_failure(store, run_id, item, config, reason, time.time() - started)
        return Outcome(item.name, config_label(config), "failed", run_id, time.time() - started, reason)
    return dataclasses.replace(item, document=document)


def evaluate_document(
    item: CorpusItem,
    config: RunConfig,
    store: Store,
    *,
    metrics: Sequence[str] = (),
    options=None,
    backend=None,
    executor_for=None,
) -> Outcome:
    """Summarize one document with one configuration, then score its final
    summary. Never raises for a bad document or a failed run: the outcome
    (and the `runs` row) says what went wrong. Interrupts still propagate."""
    loaded = load_item(item, config, store)
    if isinstance(loaded, Outcome):
        return loaded
    started = time.time()
    label = config_label(config)
    run_id = new_id()
    try:
        if backend is None:
            backend = make_backend(config)
        result = summarize_document(loaded.document, config, store, backend=backend, executor_for=executor_for,
                                    run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the runner marked the run failed; record it, go on
        if not store.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):  # failed before the run began
            record_failure(store, run_id, item, config, _reason(exc), time.time() - started)
        return Outcome(item.name, label, "failed", run_id, time.time() - started, _reason(exc))
    outcome = Outcome(item.name, label, result.status, run_id, result.seconds)
    if metrics:
        outcome.scores, outcome.error = _score(store, run_id, item, metrics, options)
    return outcome


def _score(store: Store, run_id: str, item: CorpusItem, metrics: Sequence[str], options) -> tuple[dict, str | None]:
    from scoring import ScoreJob, ScoringOptions, score_runs

    wanted = [m for m in metrics if item.references or m not in ("rouge", "bertscore")]
    if not wanted:
        return {}, None
    job = ScoreJob(run_id, list(item.references) or None, list(item.reference_ids) or None)
    try:
        rows = score_runs(store, [job], wanted, options=options or ScoringOptions())
    except Exception as exc:  # noqa: BLE001 - the run stands; its scores are missing, and the outcome says why
        return {}, f"scoring failed: {_reason(exc)}"
    return {f"{r['metric']}_{r['variant']}": r["value"] for r in rows
            if r.get("aggregate") in (None, "max") and r.get("reference_id") is None}, None


def record_failure(store: Store, run_id: str, item: CorpusItem, config: RunConfig, reason: str,
                      seconds: float) -> None:
    """A `runs` row for a document that never became a run (unreadable, or a
    configuration its model cannot serve), so SQL and tables see it."""
    path = item.path or item.name
    store.insert_rows("runs", [{
        "run_id": run_id, "document_path": str(Path(path).resolve()) if item.path else path,
        "method": config.method, "model": config.model if config.method != BASELINE else None,
        "chunk_size": config.chunk_size, "summary_words": config.summary_words,
        "params": {"configuration": config_label(config)}, "status": "failed", "error": reason[:1000],
        "started_at": utc(time.time() - seconds), "finished_at": utc(), "seconds": seconds,
        "pid": os.getpid(), "host": socket.gethostname(),
    }])


def _reason(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def evaluate(
    items: Sequence[CorpusItem],
    configs: Sequence[RunConfig],
    store: Store,
    *,
    metrics: Sequence[str] = (),
    options=None,
    concurrency: int = 1,
    backend=None,
    on_outcome: Callable[[Outcome], None] | None = None,
    backend_for: Callable[[RunConfig], object] | None = None,
) -> list[Outcome]:
    """Every document with every configuration, `concurrency` documents at a
    time in this process. `backend` overrides the LLM of the LLM methods;
    `backend_for(config)` gives one per configuration (batch mode, budgets)."""
    for config in configs:
        config.validate()
    pairs = [(item, config) for item in items for config in configs]

    def one(pair) -> Outcome:
        item, config = pair
        chosen = backend_for(config) if backend_for else backend
        try:
            outcome = evaluate_document(item, config, store, metrics=metrics, options=options,
                                        backend=None if config.method == BASELINE else chosen)
        finally:
            if backend_for and hasattr(chosen, "release"):
                chosen.release()  # a batch participant that will ask nothing more
        if on_outcome:
            on_outcome(outcome)
        return outcome

    if concurrency <= 1:
        return [one(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="longsum-doc") as pool:
        return list(pool.map(one, pairs))


def with_baseline(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """The configurations with the extractive baseline added once, so every table has a floor."""
    configs = list(configs)
    if not any(c.method == BASELINE for c in configs):
        base = configs[0] if configs else RunConfig()
        configs.append(dataclasses.replace(base, method=BASELINE, compress="none"))
    return configs


def summary_table(store: Store, outcomes: Sequence[Outcome]) -> tuple[list[str], list[tuple]]:
    """Per configuration: runs, how they ended, mean cost and mean scores (from `scores_wide`)."""
    by_label: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_label.setdefault(outcome.configuration, []).append(outcome)
    present = {c for (c,) in store.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'scores_wide'")}
    scores = [(column, name) for column, name in SCORE_COLUMNS if column in present]
    selects = "".join(f", round(avg(w.{column}), 4) AS {name}" for column, name in scores)
    columns = ["configuration", "runs", "ok", "degraded", "failed", "seconds", "llm_calls", "tokens", "words",
               *[name for _, name in scores]]
    rows = []
    for label, group in by_label.items():
        finished = [o.run_id for o in group if o.status != "failed"]
        counts = [sum(o.status == s for o in group) for s in ("ok", "degraded", "failed")]
        ((seconds, calls, tokens, words, *values),) = store.execute(
            f"SELECT round(avg(r.seconds), 1), round(avg(r.llm_calls), 1), "
            f"round(avg(r.input_tokens + r.output_tokens)), round(avg(s.n_words), 1){selects} "
            "FROM runs r LEFT JOIN scores_wide w USING (run_id) "
            "LEFT JOIN summaries s ON s.run_id = r.run_id AND s.is_final WHERE list_contains(?, r.run_id)",
            [finished],
        )
        rows.append((label, len(group), *counts, seconds, calls, tokens, words, *values))
    keep = [i for i, c in enumerate(columns) if i < 9 or any(r[i] is not None for r in rows)]
    return [columns[i] for i in keep], [tuple(r[i] for i in keep) for r in rows]


def tag_runs(store: Store, outcomes: Sequence[Outcome], corpus: str | None = None) -> str:
    """Mark the runs of one evaluation with its id (`runs.params.corpus`), for
    `summarize report --corpus ID` and SQL; returns the id."""
    corpus = corpus or new_id()[:12]
    store.execute("UPDATE runs SET params = json_merge_patch(coalesce(params, '{}'), json_object('corpus', ?)) "
                  "WHERE list_contains(?, run_id)", [corpus, [o.run_id for o in outcomes]])
    return corpus


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per document that failed (or whose scoring failed), for the user."""
    return [f"{o.configuration} · {o.document}: {o.error}" for o in outcomes if o.error]
