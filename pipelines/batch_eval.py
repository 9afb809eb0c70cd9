"""A corpus evaluated in one process, for the two things that need one place
to stand: batch mode (a provider batch spans documents, so every document's
requests must reach one collector) and a corpus budget (one running total of
what was spent). Documents run as threads of this process; each is the
harness's `evaluate_document`, with the same failure rule as everywhere.

While a batch is out, the threads only wait (no CPU, no task worker held);
the collector polls the provider with backoff.

Threads are bounded by configuration, never by the corpus: `concurrency`
documents at once, each with its configuration's `concurrency` steps
(`--concurrency` x `--call-concurrency`), so a wave holds at most that many
requests. A wider wave (fewer, larger provider batches) is a matter of
raising those two numbers, not of the corpus's size.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from pipelines.budget import Budget, BudgetedBackend
from pipelines.corpus import CorpusItem
from pipelines.evaluate import BASELINE, Outcome, evaluate
from pipelines.llm.base import BoundedBackend
from pipelines.llm.batch import DEFAULT_POLL_S, DEFAULT_SETTLE_S, BatchingBackend
from pipelines.runner import RunConfig, make_backend
from pipelines.store import DuckDBBatchJournal, Store

def evaluate_in_process(
    items: Sequence[CorpusItem],
    configs: Sequence[RunConfig],
    store: Store,
    *,
    batch: bool = False,
    max_cost: float | None = None,
    metrics: Sequence[str] | None = None,
    options=None,
    concurrency: int = 4,
    settle_s: float = DEFAULT_SETTLE_S,
    poll_s: float = DEFAULT_POLL_S,
    on_outcome: Callable[[Outcome], None] | None = None,
    source: str | None = None,
    max_in_flight: int | None = None,
) -> list[Outcome]:
    """Every document x configuration; with `batch`, every LLM request through
    the provider's batch API (half price); with `max_cost`, all of them
    stop once the recorded cost reaches it. `source` names the evaluation to
    resume (see `pipelines.evaluate.evaluate`); `max_in_flight` bounds the
    synchronous calls of all documents together (a global API limit's slots)."""
    budget = Budget(max_cost) if max_cost is not None else None
    slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight and not batch else None
    backends: dict[tuple, object] = {}
    batchers: list[BatchingBackend] = []
    lock = threading.Lock()

    def backend_for(config: RunConfig):
        """The configuration's backend; in batch mode a participant view of
        its collector per document, so a wave goes out once all of them wait."""
        if config.method == BASELINE:
            return None
        key = (config.model, config.base_url, config.context_window, config.timeout_s, config.max_retries)
        with lock:
            if key not in backends:
                backend = make_backend(config)
                if batch:
                    backend = BatchingBackend(backend, DuckDBBatchJournal(store), settle_s=settle_s, poll_s=poll_s)
                    batchers.append(backend)
                if slots is not None:
                    backend = BoundedBackend(backend, slots)
                backends[key] = backend
            shared = backends[key]
        if batch:
            shared = shared.participant()
        return BudgetedBackend(shared, budget) if budget is not None else shared

    def expect(pending: list[tuple[CorpusItem, RunConfig]]) -> None:
        """Every collector expects the documents that will start at once (of those left to run)."""
        if not batch:
            return
        for config in configs:
            shared = backend_for(config)
            if shared is not None:
                shared.release()
        for batcher in batchers:
            waiting = sum(1 for _, config in pending if batcher.model == _model(config))
            if waiting:
                batcher.expect(min(concurrency, waiting))

    try:
        return evaluate(items, configs, store, metrics=metrics or (), options=options, concurrency=concurrency,
                        backend_for=backend_for, on_outcome=on_outcome, on_pending=expect, source=source)
    finally:
        for batcher in batchers:
            batcher.close()


def _model(config: RunConfig) -> str:
    from pipelines.llm import parse_spec

    return parse_spec(config.model)[1] or ""
