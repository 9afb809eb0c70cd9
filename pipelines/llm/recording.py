"""Content-addressed LLM calls: every request is hashed, looked up in a
journal (the DuckDB `llm_calls` table, or an in-memory one), replayed on a
hit, and recorded on a miss the moment it returns, so a run killed half-way
resumes without repeating a finished call."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

from pipelines.llm.base import (
    Completion,
    CompletionRequest,
    LLMBackend,
    LLMError,
    TransientLLMError,
    fit_max_tokens,
)
from pipelines.llm.pricing import backend_cost
from pipelines.secrets import redact
from prompts import RenderedPrompt


TRANSIENT_ATTEMPTS = 3
TRANSIENT_BACKOFF_S = 0.5


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    run_id: str | None
    request_hash: str
    backend: str
    model: str
    template: str
    template_hash: str
    step: str
    request: str  # JSON: messages and parameters
    response: str
    finish_reason: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float | None
    cached: bool  # True when this row replays an earlier call
    status: str  # "ok" | "error"
    error: str | None
    created_at: float
    cache_write_tokens: int = 0
    batch_id: str | None = None  # set when a provider batch answered the call (its cost is the batch price)

    def completion(self) -> Completion:
        return Completion(
            text=self.response, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            finish_reason=self.finish_reason, latency_s=self.latency_s,
            cached_input_tokens=self.cached_input_tokens, cache_write_tokens=self.cache_write_tokens or 0,
            batch_id=self.batch_id,
        )


class CallJournal(Protocol):
    def lookup(self, request_hash: str) -> CallRecord | None: ...

    def record(self, record: CallRecord) -> None: ...


class MemoryJournal:
    """A journal that lives in memory: for tests, workers and dry runs."""

    def __init__(self, preload: dict[str, CallRecord] | None = None):
        self._by_hash = dict(preload or {})
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    def lookup(self, request_hash: str) -> CallRecord | None:
        with self._lock:
            return self._by_hash.get(request_hash)

    def record(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)
            if record.status == "ok" and not record.cached:
                self._by_hash.setdefault(record.request_hash, record)


@dataclass
class Usage:
    calls: int = 0  # requests that reached the backend
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_records(cls, records: list["CallRecord"]) -> "Usage":
        usage = cls()
        for r in records:
            if r.status != "ok":
                usage.errors += 1
            elif r.cached:
                usage.cache_hits += 1
            else:
                usage.calls += 1
                usage.input_tokens += r.input_tokens
                usage.cached_input_tokens += r.cached_input_tokens
                usage.output_tokens += r.output_tokens
                usage.llm_seconds += r.latency_s
                usage.cost_usd += r.cost_usd or 0.0
        return usage


@dataclass(frozen=True)
class LLMResult:
    completion: Completion
    request_hash: str
    cached: bool
    max_tokens: int

    @property
    def text(self) -> str:
        return self.completion.text


@dataclass
class RecordingLLM:
    """Wraps a backend: budgets max_tokens, hashes, replays, records, counts."""

    backend: LLMBackend
    journal: CallJournal
    run_id: str | None = None
    on_call: Callable[[LLMResult], None] | None = None
    usage: Usage = field(default_factory=Usage)
    priced: bool = True  # False: calls get no cost (the preflight's planning backend, which answers without a model)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    @property
    def context_window(self) -> int:
        return self.backend.context_window

    def complete(
        self, prompt: RenderedPrompt, max_tokens: int, *, temperature: float = 0.0, seed: int = 0, step: str = "",
        stop: tuple[str, ...] = (), repeat_penalty: float = 0.0, watch=None,
    ) -> LLMResult:
        """`watch` (see CompletionRequest) may end the answer early; its `name`
        joins the request identity, as does a non-zero `repeat_penalty`."""
        budget = fit_max_tokens(self.backend, prompt.messages, max_tokens)
        request = CompletionRequest(
            messages=prompt.messages, max_tokens=budget, temperature=temperature, seed=seed,
            cache_prefix_messages=prompt.cache_prefix_messages, stop=tuple(stop),
            repeat_penalty=repeat_penalty, watch=watch,
        )
        fields = {"messages": list(prompt.messages), "max_tokens": budget, "temperature": temperature, "seed": seed}
        # Only set when used, so the keys of requests without them stay what they were.
        if stop:
            fields["stop"] = list(stop)
        if repeat_penalty:
            fields["repeat_penalty"] = repeat_penalty
            # llama.cpp's penalty once looked back 64 tokens only: its answers are not these.
            fields["penalty_over"] = "answer"
        if watch is not None:
            fields["watch"] = watch.name
        request_json = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        key = request_hash(self.backend.identity(), prompt, request_json)
        hit = self.journal.lookup(key)
        if hit is not None:
            replay = replace(hit, call_id=new_id(), run_id=self.run_id, cached=True, step=step, created_at=time.time())
            self.journal.record(replay)
            result = LLMResult(hit.completion(), key, cached=True, max_tokens=budget)
            self._count(result, 0.0)
            return result
        base = dict(
            run_id=self.run_id, request_hash=key, backend=self.backend.backend, model=self.backend.model,
            template=prompt.template, template_hash=prompt.template_hash, step=step, request=request_json,
        )
        completion = self._complete_with_retries(request, base)
        cost = backend_cost(self.backend, completion) if self.priced else None
        self.journal.record(
            CallRecord(
                call_id=new_id(), **base, response=completion.text, finish_reason=completion.finish_reason,
                input_tokens=completion.input_tokens, cached_input_tokens=completion.cached_input_tokens,
                output_tokens=completion.output_tokens, latency_s=completion.latency_s,
                cost_usd=cost, cached=False, status="ok", error=None, created_at=time.time(),
                cache_write_tokens=completion.cache_write_tokens, batch_id=completion.batch_id,
            )
        )
        result = LLMResult(completion, key, cached=False, max_tokens=budget)
        self._count(result, cost)
        return result

    def _complete_with_retries(self, request: CompletionRequest, base: dict) -> Completion:
        """The backend's answer; transient failures the SDK does not retry are
        retried here with backoff. Every failed attempt is journaled."""
        for attempt in range(TRANSIENT_ATTEMPTS):
            try:
                return self.backend.complete(request)
            except LLMError as exc:
                self.journal.record(_error_record(base, redact(str(exc))))
                with self._lock:
                    self.usage.errors += 1
                if not isinstance(exc, TransientLLMError) or attempt == TRANSIENT_ATTEMPTS - 1:
                    raise
                time.sleep(TRANSIENT_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def _count(self, result: LLMResult, cost: float | None) -> None:
        c = result.completion
        with self._lock:
            if result.cached:
                self.usage.cache_hits += 1
            else:
                self.usage.calls += 1
                self.usage.input_tokens += c.input_tokens
                self.usage.cached_input_tokens += c.cached_input_tokens
                self.usage.output_tokens += c.output_tokens
                self.usage.llm_seconds += c.latency_s
                self.usage.cost_usd += cost or 0.0
        if self.on_call is not None:
            self.on_call(result)


def request_hash(identity: dict, prompt: RenderedPrompt, request_json: str) -> str:
    payload = json.dumps(
        {"model": identity, "template": prompt.template, "template_hash": prompt.template_hash, "request": request_json},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def _error_record(base: dict, message: str) -> CallRecord:
    return CallRecord(
        call_id=new_id(), **base, response="", finish_reason="error", input_tokens=0, cached_input_tokens=0,
        output_tokens=0, latency_s=0.0, cost_usd=None, cached=False, status="error", error=message,
        created_at=time.time(),
    )
