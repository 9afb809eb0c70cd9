"""Budgets: `--max-cost USD` for a run or a whole corpus.

Before anything starts, the preflight's upper estimate (pipelines.plan) must
fit the budget. While it runs, `BudgetedBackend` adds up what each fresh call
cost (as `llm_calls` records it: list price, or the batch price) and refuses
the next call once the total has reached the budget; the run then ends
`failed` with the reason "budget: ...", every answer so far journaled, so a
rerun with a larger budget resumes from the journal at no cost for them.

Calls in flight count too. Before a call goes out it reserves its upper
bound (its prompt's tokens and its max_tokens at the price it will be billed,
the batch discount included); it goes when the spent and reserved total
plus that bound fits the budget, or alone when nothing else is in flight,
and otherwise waits for calls in flight to settle. So concurrent calls, and
the waves of a provider batch (every caller blocks at once, then the wave
goes out), are sized by the remaining budget: the total can pass the budget
by at most one call's upper bound, never by a wave.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipelines.llm.base import Completion, CompletionRequest, WrappedBackend, prompt_tokens
from pipelines.llm.pricing import backend_cost


def usd(value: float | None) -> str:
    """Dollars as the preflight, its refusal and the budget print them: $0
    for nothing, never "$0.0000" for a cost too small to show."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if value < 0.0001:
        return "under $0.0001"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


class BudgetExceeded(RuntimeError):
    """The recorded cost reached --max-cost. Not an LLMError: no call was made,
    so nothing is journaled as a failed call and nothing retries it."""

    reason = "budget"


@dataclass
class Budget:
    limit_usd: float
    spent_usd: float = 0.0
    unpriced_calls: int = 0  # calls whose price is unknown (cost NULL): they cannot count
    reserved_usd: float = 0.0  # upper bounds of the calls in flight
    in_flight: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def check(self) -> None:
        with self._lock:
            self._refuse_if_spent()

    def _refuse_if_spent(self) -> None:
        if self.spent_usd >= self.limit_usd:
            raise BudgetExceeded(
                f"budget: recorded cost {usd(self.spent_usd)} reached --max-cost {usd(self.limit_usd)}; "
                f"every answer so far is kept, and a rerun with a larger --max-cost resumes from them"
            )

    def reserve(self, upper: float | None) -> float:
        """Wait until a call whose cost is at most `upper` may go (see module
        doc); returns what was reserved, for `settle`. Refuses once spent."""
        upper = upper or 0.0  # an unpriced call cannot be bounded (the preflight refuses those)
        with self._lock:
            while True:
                self._refuse_if_spent()
                if self.in_flight == 0 or self.spent_usd + self.reserved_usd + upper <= self.limit_usd:
                    self.reserved_usd += upper
                    self.in_flight += 1
                    return upper
                self._lock.wait()

    def settle(self, reserved: float, cost: float | None) -> None:
        """A reserved call is over: its bound is released, what it cost added
        (nothing for a call that failed before it was billed)."""
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - reserved)
            self.in_flight -= 1
            self._add(cost)
            self._lock.notify_all()

    def add(self, cost: float | None) -> None:
        with self._lock:
            self._add(cost)
            self._lock.notify_all()

    def _add(self, cost: float | None) -> None:
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

    def upper_cost(self, request: CompletionRequest) -> float | None:
        """The most this request can cost: its whole prompt and max_tokens,
        at the batch price when a provider batch will answer it."""
        batch = bool(self.inner.describe().get("batch"))
        bound = Completion(text="", input_tokens=prompt_tokens(self.inner, request.messages),
                           output_tokens=request.max_tokens, finish_reason="length", latency_s=0.0,
                           batch_id="upper bound" if batch else None)
        return backend_cost(self.inner, bound)

    def complete(self, request: CompletionRequest) -> Completion:
        reserved = self.budget.reserve(self.upper_cost(request))
        cost = None
        try:
            completion = self.inner.complete(request)
            cost = backend_cost(self.inner, completion)
        except BaseException:
            self.budget.settle(reserved, 0.0)  # not answered: nothing billed
            raise
        self.budget.settle(reserved, cost)
        return completion
