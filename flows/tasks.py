"""Prefect tasks: a workflow step, and a whole document of a corpus.

Tasks may run on Dask workers on other machines, so everything they need
arrives as data: the step's owner as a recipe, the document's text, and the
earlier answers that can be replayed (rows of `llm_calls`). On a worker they
never open the flow's DuckDB file (its one writer is the flow process) and
never read a path of the flow's machine; what they produce comes back as
their result. A document task that runs in the flow's own process (the
thread runner) writes the flow's store directly, so every call is durable
the moment it returns.

Prefect does not cache these tasks: longsum's own journal (`llm_calls`,
keyed by model identity, rendered prompt with its template hash, and
parameters) decides what is replayed, so an edited prompt is never answered
from a stale result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipelines.corpus import CorpusItem
from pipelines.evaluate import Outcome, evaluate_document
from pipelines.llm import parse_spec
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from pipelines.runner import RunConfig, make_backend
from pipelines.store import Store, add_calls, run_tables
from pipelines.summarize.executors import Recipe


@dataclass
class StepOutcome:
    value: object
    calls: list = field(default_factory=list)  # CallRecord, for the writer


class StepFailed(RuntimeError):
    """A step raised; carries the calls it made, so that none is lost."""

    def __init__(self, message: str, calls: list):
        super().__init__(message, calls)
        self.calls = calls

    def __str__(self) -> str:
        return self.args[0]


# One API backend (one SDK client with its connection pool) per worker process
# and configuration, as the SDKs recommend: a new client per task costs an SSL
# context and a fresh connection (a TLS handshake against a real API) per call.
_API_CLIENT_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
_api_backends: dict[tuple, object] = {}
_api_backends_lock = threading.Lock()


def worker_backend(config: RunConfig):
    if parse_spec(config.model)[0] not in ("openai", "anthropic"):
        return make_backend(config)  # llama.cpp shares its loaded model per process already
    # The keys are part of the identity (a changed key needs a new client) but are kept only as a digest.
    environment = hashlib.sha256("\0".join(os.environ.get(name, "") for name in _API_CLIENT_ENV).encode()).hexdigest()
    key = (config.model, config.base_url, config.context_window, config.timeout_s, config.max_retries, environment)
    with _api_backends_lock:
        if key not in _api_backends:
            _api_backends[key] = make_backend(config)
        return _api_backends[key]


def _step_name(parameters: dict) -> str:
    return parameters["step"]


@task(name="step", task_run_name=_step_name, cache_policy=NO_CACHE, persist_result=False)
def step_task(recipe: Recipe, method: str, args: tuple, step: str, config: RunConfig, run_id: str,
              replay: dict) -> StepOutcome:
    """One step of a workflow: rebuild its owner around this worker's LLM, run it."""
    journal = MemoryJournal(replay)
    llm = RecordingLLM(worker_backend(config), journal, run_id=run_id)
    owner = recipe.factory(llm, **recipe.options)
    try:
        value = getattr(owner, method)(*args)
    except Exception as exc:
        raise StepFailed(f"{step}: {type(exc).__name__}: {exc}", journal.records) from exc
    return StepOutcome(value, journal.records)


def _document_name(parameters: dict) -> str:
    return f"{parameters['item'].name} · {parameters['config'].method}"


@task(name="evaluate-document", task_run_name=_document_name, cache_policy=NO_CACHE, persist_result=False)
def evaluate_document_task(item: CorpusItem, config: RunConfig, metrics: list[str], options, corpus: str,
                           replay, limit: str | None, db: str | None) -> tuple[Outcome, dict | None]:
    """One document of a corpus, start to finish, its calls journaled as they return.

    With `db` (the task runs in the flow's own process) the run goes straight
    into the flow's store; the result is the outcome alone. Otherwise (a Dask
    worker, maybe on another machine) it goes into a spool file of the
    worker's, seeded with `replay`, and its rows come back as the result; a
    spool the worker was killed over is resumed by the same document's next
    task there."""
    from flows.limits import api_slots

    with api_slots(limit, config.concurrency) as width:
        # the document's calls in flight stay within the slots it holds
        config = dataclasses.replace(config, concurrency=min(config.concurrency, width))
        backend = worker_backend(config) if config.method != "extractive" else None
        if db is not None:
            outcome = evaluate_document(item, config, Store(db), metrics=metrics, options=options, backend=backend,
                                        corpus=corpus)
            return outcome, None
        with spool(item, config, replay) as store:
            outcome = evaluate_document(item, config, store, metrics=metrics, options=options, backend=backend,
                                        corpus=corpus)
            return outcome, run_tables(store, outcome.run_id)


@contextlib.contextmanager
def spool(item: CorpusItem, config: RunConfig, replay) -> Iterator[Store]:
    """The worker's durable store for one document x configuration, removed
    once the run's rows are on their way back; kept when the worker dies."""
    from pipelines.evaluate import config_label
    from pipelines.paths import longsum_home

    name = hashlib.sha256(f"{item.name}\0{config_label(config)}".encode()).hexdigest()[:24]
    path = longsum_home() / "spool" / f"{name}.duckdb"
    resumed = path.exists()
    with Store(path).held() as store:
        if not resumed and replay is not None:
            add_calls(store, replay)
        yield store
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
