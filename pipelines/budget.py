"""Budgets: `--max-cost USD` for a run or a whole corpus.

Before anything starts, the preflight's upper estimate (pipelines.plan) must
fit the budget. While it runs, `BudgetedBackend` adds up what each fresh call
cost (as `llm_calls` records it: list price, or the batch price) and refuses
the next call once the total has reached the budget; the run then ends
`failed` with the reason "budget: ...", every answer so far journaled, so a
rerun with a larger budget resumes from the journal at no cost for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipelines.llm.base import Completion, CompletionRequest, WrappedBackend
from pipelines.llm.pricing import backend_cost


class BudgetExceeded(RuntimeError):
    """The recorded cost reached --max-cost. Not an LLMError: no call was made,
    so nothing is journaled as a failed call and nothing retries it."""

    reason = "budget"


@dataclass
class Budget:
    limit_usd: float
    spent_usd: float = 0.0
    unpriced_calls: int = 0  # calls whose price is unknown (cost NULL): they cannot count
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> None:
        with self._lock:
            if self.spent_usd >= self.limit_usd:
                raise BudgetExceeded(
                    f"budget: recorded cost ${self.spent_usd:.4f} reached --max-cost ${self.limit_usd:.4f}; "
                    f"every answer so far is kept, and a rerun with a larger --max-cost resumes from them"
                )

    def add(self, cost: float | None) -> None:
        with self._lock:
            if cost is None:
                self.unpriced_calls += 1
            else:
                self.spent_usd += cost


class BudgetedBackend(WrappedBackend):
    """A backend that refuses calls once its budget is spent (shared by every
    document of a corpus when they share the Budget)."""

    def __init__(self, backend, budget: Budget):
        super().__init__(backend)
        self.budget = budget

    def describe(self) -> dict:
        return {**self.inner.describe(), "max_cost_usd": self.budget.limit_usd}

    def request_params(self, request: CompletionRequest) -> dict:
        return self.inner.request_params(request)

    def release(self) -> None:
        """Pass on that this caller is done (a batch participant leaving)."""
        release = getattr(self.inner, "release", None)
        if release is not None:
            release()

    def complete(self, request: CompletionRequest) -> Completion:
        self.budget.check()
        completion = self.inner.complete(request)
        self.budget.add(backend_cost(self.inner, completion))
        return completion
