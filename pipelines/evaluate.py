"""The evaluation harness: documents x configurations, summarized then scored.

It sits above summarizing (`pipelines.runner`) and scoring (`scoring`), which
know nothing of each other. `evaluate_document` is the one per-document
function and `evaluate` the one driver: `summarize eval`, `summarize corpus`
and the `evaluate_corpus` flow all go through them, the flow supplying a
launcher that makes each document x configuration a Prefect task. One
failure rule: a document that cannot be read or summarized is recorded as a
failed run with its reason, and every other document completes. Scoring a
finished run that then fails keeps the run and records why in the outcome.

Durable as it goes: an evaluation is a `corpora` row, and each document x
configuration is written to `corpus_results` the moment it finishes (as
completed, never in submission order), at most `concurrency` in flight, a
free slot taking the next at once. A killed evaluation is resumed by the next
one with the same source, configurations and metrics: it redoes only the
pairs with no result, and the journal replays every call they had made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from pipelines.corpus import CorpusItem
from pipelines.documents import load_document
from pipelines.llm.recording import new_id
from pipelines.report import SCORES
from pipelines.runner import RunConfig, alive, make_backend, summarize_document
from pipelines.secrets import redact
from pipelines.store import Store, utc
from pipelines.summarize.executors import completions

BASELINE = "extractive"


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
    corpus: str | None = None  # the evaluation it belongs to (`corpora`)


def config_label(config: RunConfig) -> str:
    """method x model x chunk size x compression: how tables name a configuration."""
    if config.method == BASELINE:
        return f"{BASELINE} (baseline)"
    parts = [config.method, config.model, f"chunk {config.chunk_size}", f"{config.summary_words} words"]
    if config.compress != "none":
        parts.append(f"{config.compress} {config.compress_ratio:g}")
    return " · ".join(parts)


def load_item(item: CorpusItem, config: RunConfig, store: Store, corpus: str | None = None) -> CorpusItem | Outcome:
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
        record_failure(store, run_id, item, config, reason, time.time() - started, corpus)
        return Outcome(item.name, config_label(config), "failed", run_id, time.time() - started, reason, corpus=corpus)
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
    corpus: str | None = None,
) -> Outcome:
    """Summarize one document with one configuration, then score its final
    summary. Never raises for a bad document or a failed run: the outcome
    (and the `runs` row) says what went wrong. Interrupts still propagate."""
    with store.lingering():  # the run, its scores and its rows share a connection to a DuckDB file
        loaded = load_item(item, config, store, corpus)
        if isinstance(loaded, Outcome):
            return loaded
        started = time.time()
        label = config_label(config)
        run_id = new_id()
        try:
            if backend is None:
                backend = make_backend(config)
            result = summarize_document(loaded.document, config, store, backend=backend, executor_for=executor_for,
                                        run_id=run_id, extra_params=_stamp(item, config, corpus))
        except Exception as exc:  # noqa: BLE001 - the runner marked the run failed; record it, go on
            if not store.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):  # failed before the run began
                record_failure(store, run_id, item, config, _reason(exc), time.time() - started, corpus)
            return Outcome(item.name, label, "failed", run_id, time.time() - started, _reason(exc), corpus=corpus)
        outcome = Outcome(item.name, label, result.status, run_id, result.seconds, corpus=corpus)
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


def _stamp(item: CorpusItem, config: RunConfig, corpus: str | None) -> dict:
    """What a run of an evaluation carries in `runs.params`: its document and
    configuration as the evaluation names them, and the evaluation's id."""
    return {"configuration": config_label(config), "item": item.name, **({"corpus": corpus} if corpus else {})}


def record_failure(store: Store, run_id: str, item: CorpusItem, config: RunConfig, reason: str,
                   seconds: float, corpus: str | None = None) -> None:
    """A `runs` row for a document that never became a run (unreadable, or a
    configuration its model cannot serve), so SQL and tables see it."""
    path = item.path or item.name
    store.insert_rows("runs", [{
        "run_id": run_id, "document_path": str(Path(path).resolve()) if item.path else path,
        "method": config.method, "model": _model_label(config),
        "chunk_size": config.chunk_size, "summary_words": config.summary_words,
        "params": _stamp(item, config, corpus), "status": "failed", "error": reason[:1000],
        "started_at": utc(time.time() - seconds), "finished_at": utc(), "seconds": seconds,
        "pid": os.getpid(), "host": socket.gethostname(),
    }])


def _model_label(config: RunConfig) -> str:
    """The model column of a run that never began: what its run would have named (the baseline's
    method), or the model spec it was given."""
    if config.method == BASELINE:
        from pipelines.summarize.extractive import MODEL_NAME

        return MODEL_NAME
    return config.model


def _reason(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


class Launcher(Protocol):
    """Where the documents x configurations of an evaluation run: `start`
    hands one to a worker and returns its future at once; `finish`, called in
    the driver's thread once that future is done, stores what it brought back
    and returns the outcome."""

    def start(self, item: CorpusItem, config: RunConfig, corpus: str) -> Future: ...

    def finish(self, item: CorpusItem, config: RunConfig, corpus: str, future) -> Outcome: ...


class InProcess:
    """Threads of this process, each writing its run into the store as it goes."""

    def __init__(self, store: Store, pool: ThreadPoolExecutor, *, metrics: Sequence[str], options, backend=None,
                 backend_for: Callable[[RunConfig], object] | None = None):
        self.store, self.pool, self.metrics, self.options = store, pool, metrics, options
        self.backend, self.backend_for = backend, backend_for

    def start(self, item: CorpusItem, config: RunConfig, corpus: str) -> Future:
        return self.pool.submit(self._run, item, config, corpus)

    def _run(self, item: CorpusItem, config: RunConfig, corpus: str) -> Outcome:
        chosen = self.backend_for(config) if self.backend_for else self.backend
        try:
            return evaluate_document(item, config, self.store, metrics=self.metrics, options=self.options,
                                     backend=None if config.method == BASELINE else chosen, corpus=corpus)
        finally:
            if self.backend_for and hasattr(chosen, "release"):
                chosen.release()  # a batch participant that will ask nothing more

    def finish(self, item: CorpusItem, config: RunConfig, corpus: str, future: Future) -> Outcome:
        return future.result()


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
    launcher: Launcher | None = None,
    source: str | None = None,
    on_pending: Callable[[list[tuple[CorpusItem, RunConfig]]], None] | None = None,
) -> list[Outcome]:
    """Every document with every configuration, `concurrency` at a time:
    in this process's threads, or wherever `launcher` starts them. Resumes
    the unfinished evaluation of the same `source` (default: these items),
    configurations and metrics. `backend` overrides the LLM of the LLM
    methods; `backend_for(config)` gives one per configuration (batch mode,
    budgets); `on_pending` sees the pairs left to run before any starts.
    Returns the outcomes in document x configuration order."""
    for config in configs:
        config.validate()
    corpus, done = open_corpus(store, source or [item.name for item in items], configs, metrics)
    pairs = [(item, config) for item in items for config in configs]
    pending = [(n, item, config) for n, (item, config) in enumerate(pairs)
               if (item.name, config_label(config)) not in done]
    if on_pending:
        on_pending([(item, config) for _, item, config in pending])
    outcomes = {n: done[(item.name, config_label(config))] for n, (item, config) in enumerate(pairs)
                if (item.name, config_label(config)) in done}
    with contextlib.ExitStack() as stack:
        if launcher is None:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, concurrency),
                                                          thread_name_prefix="longsum-doc"))
            launcher = InProcess(store, pool, metrics=metrics, options=options, backend=backend,
                                 backend_for=backend_for)
        for n, outcome in drive(pending, launcher, store, corpus, max(1, concurrency)):
            record_result(store, outcome)
            outcomes[n] = outcome
            if on_outcome:
                on_outcome(outcome)
    close_corpus(store, corpus)
    return [outcomes[n] for n in sorted(outcomes)]


def drive(pending: Iterable[tuple[int, CorpusItem, RunConfig]], launcher: Launcher, store: Store, corpus: str,
          width: int) -> Iterable[tuple[int, Outcome]]:
    """Yield each pair's outcome as it completes, never more than `width`
    started and unfinished; each completion starts the next pair at once
    (`completions`, the executors' driver)."""
    started = completions(pending, lambda pair: launcher.start(pair[1], pair[2], corpus), width)
    for (n, item, config), future in started:
        try:
            outcome = launcher.finish(item, config, corpus, future)
        except Exception as exc:  # noqa: BLE001 - a lost worker: this document failed, the others go on
            outcome = _lost(store, item, config, corpus, exc)
        yield n, outcome


def _lost(store: Store, item: CorpusItem, config: RunConfig, corpus: str, exc: Exception) -> Outcome:
    run_id = new_id()
    reason = f"task failed: {_reason(exc)}"
    record_failure(store, run_id, item, config, reason, 0.0, corpus)
    return Outcome(item.name, config_label(config), "failed", run_id, 0.0, reason, corpus=corpus)


# -- the evaluation's own rows ------------------------------------------------


def open_corpus(store: Store, source, configs: Sequence[RunConfig], metrics) -> tuple[str, dict]:
    """(evaluation id, {(document, configuration): Outcome} already finished):
    the latest unfinished evaluation of the same key whose process is gone,
    resumed, or a new one."""
    key = _corpus_key(source, configs, metrics)
    rows = store.execute(
        "SELECT corpus_id, pid, host FROM corpora WHERE key = ? AND finished_at IS NULL ORDER BY started_at DESC",
        [key])
    for corpus, pid, host in rows:
        if host != socket.gethostname() or not alive(pid):
            store.execute("UPDATE corpora SET pid = ?, host = ?, resumed = coalesce(resumed, 0) + 1 "
                          "WHERE corpus_id = ?", [os.getpid(), socket.gethostname(), corpus])
            return corpus, finished_results(store, corpus)
    corpus = new_id()[:12]
    store.insert_rows("corpora", [{
        "corpus_id": corpus, "key": key, "source": source if isinstance(source, str) else None,
        "configurations": [config_label(c) for c in configs], "metrics": list(metrics or []),
        "started_at": utc(), "pid": os.getpid(), "host": socket.gethostname(), "resumed": 0,
    }])
    return corpus, {}


def _corpus_key(source, configs: Sequence[RunConfig], metrics) -> str:
    described = json.dumps({"source": source, "configs": [dataclasses.asdict(c) for c in configs],
                            "metrics": list(metrics or [])}, sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()


def finished_results(store: Store, corpus: str) -> dict:
    """{(document, configuration): Outcome} of the pairs this evaluation finished."""
    rows = store.execute(
        "SELECT item, configuration, status, run_id, seconds, error, scores FROM corpus_results "
        "WHERE corpus_id = ?", [corpus])
    return {(item, label): Outcome(item, label, status, run_id, seconds, error,
                                   json.loads(scores) if scores else {}, corpus)
            for item, label, status, run_id, seconds, error, scores in rows}


def record_result(store: Store, outcome: Outcome) -> None:
    """The pair is finished: it will not run again when its evaluation resumes."""
    store.insert_rows("corpus_results", [{
        "corpus_id": outcome.corpus, "item": outcome.document, "configuration": outcome.configuration,
        "run_id": outcome.run_id, "status": outcome.status, "seconds": outcome.seconds, "error": outcome.error,
        "scores": outcome.scores or None, "finished_at": utc(),
    }])


def close_corpus(store: Store, corpus: str) -> None:
    store.execute("UPDATE corpora SET finished_at = ? WHERE corpus_id = ?", [utc(), corpus])


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
    scores = [(column, name) for column, name, _ in SCORES if column in present]
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
