"""Batch mode: the providers' batch APIs (OpenAI Batch, Anthropic Message
Batches) behind the ordinary backend protocol, at half the price.

`BatchingBackend` wraps an API backend. Its `complete()` does not call the
API: it queues the request in a shared collector and blocks. Each document
asks through a `participant()` view of it; once every participant is blocked
(a request queued or in a batch) and nothing new arrived for `gather_s`, or
in any case once nothing new arrived for `settle_s`, the collector sends
everything queued as one provider batch, polls it with backoff, and releases
each caller with its answer. The workflows need no
change: with documents running as threads of one process, the first wave is
every document's chunk summaries, the next every document's first merge (or
incremental update), and a retry simply joins the next wave. Requests the
journal already answered never get here (RecordingLLM replays them), and
equal requests in one wave are sent once.

Every batch is journaled (`llm_batches`: id, endpoint, the request keys) the
moment the provider accepts it. A process that dies while waiting leaves
that row behind; the next process, asked the same requests, finds the
pending batch and waits on it instead of submitting again. Requests a batch
left unfinished (it expired, or was cancelled) are queued again -- only
those; a request the provider rejected fails its caller like a synchronous
error would.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Protocol

from pipelines.llm.api import api_failure, short_error
from pipelines.llm.base import Completion, CompletionRequest, LLMCallError, LLMConfigError, LLMError, WrappedBackend
from pipelines.secrets import public_url

DEFAULT_SETTLE_S = 2.0
# Once every participant is blocked: a short wait for the sibling steps of a
# batch (a document's other chunk summaries) to finish rendering their requests.
DEFAULT_GATHER_S = 0.5
DEFAULT_POLL_S = 10.0
DEFAULT_MAX_POLL_S = 300.0
POLL_GROWTH = 1.5
MAX_BATCH_REQUESTS = 50_000  # OpenAI's limit per batch (Anthropic's is 100,000)
# Statuses after which a batch changes no more.
_OPENAI_DONE = {"completed", "failed", "expired", "cancelled"}
_UNFINISHED_CODES = {"batch_expired", "batch_cancelled"}


class BatchJournal(Protocol):
    def started(self, batch_id: str, provider: str, server: str | None, model: str, request_hashes: list[str],
                input_file_id: str | None = None) -> None: ...

    def finished(self, batch_id: str, status: str, succeeded: int, failed: int, unfinished: int,
                 note: str | None = None) -> None: ...

    def pending(self, provider: str, server: str | None, model: str) -> dict[str, list[str]]: ...


class MemoryBatchJournal:
    """The batch journal in memory (tests; runs without a store)."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self._lock = threading.Lock()

    def started(self, batch_id, provider, server, model, request_hashes, input_file_id=None) -> None:
        with self._lock:
            self.rows[batch_id] = {"provider": provider, "server": server, "model": model,
                                   "hashes": list(request_hashes), "status": "submitted"}

    def finished(self, batch_id, status, succeeded, failed, unfinished, note=None) -> None:
        with self._lock:
            self.rows[batch_id].update(status=status, succeeded=succeeded, failed=failed, unfinished=unfinished)

    def pending(self, provider, server, model) -> dict[str, list[str]]:
        with self._lock:
            return {b: r["hashes"] for b, r in self.rows.items() if r["status"] == "submitted"
                    and (r["provider"], r["server"], r["model"]) == (provider, server, model)}


@dataclass
class BatchOutcome:
    status: str  # the provider's final status
    answers: dict[str, Completion] = field(default_factory=dict)  # key -> answer
    errors: dict[str, str] = field(default_factory=dict)  # key -> why the provider rejected it
    # keys the batch did not get to (expired, cancelled): to be sent again


class Provider(Protocol):
    name: str

    def submit(self, requests: dict[str, CompletionRequest]) -> tuple[str, str | None]: ...

    def done(self, batch_id: str) -> bool: ...

    def outcome(self, batch_id: str, requests: dict[str, CompletionRequest]) -> BatchOutcome: ...


class OpenAIBatches:
    """OpenAI's Batch API through the official SDK: upload a JSONL file of
    chat-completions requests, create the batch, retrieve it until it ends,
    read its output and error files."""

    name = "openai"

    def __init__(self, backend):
        self.backend = backend
        self.client = backend._client
        self.openai = backend._openai

    def submit(self, requests: dict[str, CompletionRequest]) -> tuple[str, str | None]:
        lines = "".join(
            json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                        "body": self.backend.request_params(request)}, ensure_ascii=False) + "\n"
            for key, request in requests.items()
        )
        started = time.perf_counter()
        try:
            upload = self.client.files.create(file=("longsum-batch.jsonl", lines.encode("utf-8")), purpose="batch")
            batch = self.client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                metadata={"source": "longsum"},
            )
        except self.openai.OpenAIError as exc:
            raise LLMCallError(f"cannot submit a batch: {self._failure(exc, started)}") from None
        return batch.id, upload.id

    def _retrieve(self, batch_id: str):
        started = time.perf_counter()
        try:
            return self.client.batches.retrieve(batch_id)
        except self.openai.NotFoundError:
            raise LLMCallError(f"{self._where()}: batch {batch_id} is unknown to the server") from None
        except self.openai.OpenAIError as exc:
            raise LLMCallError(f"cannot read batch {batch_id}: {self._failure(exc, started)}") from None

    def done(self, batch_id: str) -> bool:
        return self._retrieve(batch_id).status in _OPENAI_DONE

    def outcome(self, batch_id: str, requests: dict[str, CompletionRequest]) -> BatchOutcome:
        from pipelines.llm.openai_backend import completion_from_body

        batch = self._retrieve(batch_id)
        outcome = BatchOutcome(batch.status)
        if batch.status == "failed":  # the input was refused as a whole
            errors = "; ".join(e.message or "" for e in (getattr(batch.errors, "data", None) or []))[:300]
            outcome.errors = {key: f"batch {batch_id} failed: {errors or 'no reason given'}" for key in requests}
            return outcome
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self._lines(file_id):
                key = line.get("custom_id")
                if key not in requests:
                    continue
                response, error = line.get("response") or {}, line.get("error") or {}
                if response.get("status_code") == 200:
                    outcome.answers[key] = completion_from_body(response["body"], 0.0, batch_id=batch_id)
                elif error.get("code") in _UNFINISHED_CODES:
                    continue  # not answered: sent again
                else:
                    message = (response.get("body") or {}).get("error", {}).get("message") or error.get("message")
                    status = response.get("status_code")
                    outcome.errors[key] = f"{self._where()} (batch {batch_id}) returned " + (
                        f"HTTP {status}: " if status else "") + " ".join(str(message or "an error").split())[:300]
        return outcome

    def _lines(self, file_id: str) -> list[dict]:
        started = time.perf_counter()
        try:
            text = self.client.files.content(file_id).text
        except self.openai.OpenAIError as exc:
            raise LLMCallError(f"cannot read batch results {file_id}: {self._failure(exc, started)}") from None
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _where(self) -> str:
        return public_url(self.backend.base_url) or "the OpenAI API"

    def _failure(self, exc, started: float) -> str:
        return api_failure(self.openai, exc, self._where(), self.backend.timeout_s, started)


class AnthropicBatches:
    """Anthropic's Message Batches through the official SDK (cache_control
    marks survive: batched requests read and write the prompt cache too)."""

    name = "anthropic"

    def __init__(self, backend):
        self.backend = backend
        self.client = backend._client
        self.anthropic = backend._anthropic

    def submit(self, requests: dict[str, CompletionRequest]) -> tuple[str, str | None]:
        started = time.perf_counter()
        try:
            batch = self.client.messages.batches.create(requests=[
                {"custom_id": key, "params": self.backend.request_params(request)} for key, request in requests.items()
            ])
        except self.anthropic.AnthropicError as exc:
            raise LLMCallError(f"cannot submit a message batch: {self._failure(exc, started)}") from None
        return batch.id, None

    def done(self, batch_id: str) -> bool:
        started = time.perf_counter()
        try:
            return self.client.messages.batches.retrieve(batch_id).processing_status == "ended"
        except self.anthropic.AnthropicError as exc:
            raise LLMCallError(f"cannot read message batch {batch_id}: {self._failure(exc, started)}") from None

    def _failure(self, exc, started: float) -> str:
        return api_failure(self.anthropic, exc, "the Anthropic API", self.backend.timeout_s, started)

    def outcome(self, batch_id: str, requests: dict[str, CompletionRequest]) -> BatchOutcome:
        from pipelines.llm.anthropic_backend import completion_from_message

        outcome = BatchOutcome("ended")
        started = time.perf_counter()
        try:
            entries = list(self.client.messages.batches.results(batch_id))
        except self.anthropic.AnthropicError as exc:
            raise LLMCallError(f"cannot read message batch {batch_id}: {self._failure(exc, started)}") from None
        for entry in entries:
            key, result = entry.custom_id, entry.result
            if key not in requests:
                continue
            if result.type == "succeeded":
                request = requests[key] or CompletionRequest(messages=(), max_tokens=1)  # asked by no one yet
                outcome.answers[key] = completion_from_message(result.message, request, 0.0, batch_id=batch_id)
            elif result.type == "errored":
                outcome.errors[key] = f"Anthropic (message batch {batch_id}): {short_error(Exception(str(result.error)))}"
            # canceled / expired: not answered, sent again
        return outcome


def provider_for(backend) -> Provider:
    if backend.backend == "openai":
        return OpenAIBatches(backend)
    if backend.backend == "anthropic":
        return AnthropicBatches(backend)
    raise LLMConfigError(f"--batch needs an API backend with a batch API (openai:, anthropic:), not {backend.backend}")


def request_key(identity: dict, params: dict) -> str:
    """The custom id of a request: the same request gets the same key in any
    process, which is how a restarted process finds it in a pending batch."""
    payload = json.dumps({"model": identity, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class _Waiting:
    request: CompletionRequest
    future: Future
    queued_at: float
    participant: int | None = None


class BatchingBackend(WrappedBackend):
    """An API backend whose calls go out as provider batches (see module doc)."""

    def __init__(self, backend, journal: BatchJournal | None = None, *, settle_s: float = DEFAULT_SETTLE_S,
                 poll_s: float = DEFAULT_POLL_S, max_poll_s: float = DEFAULT_MAX_POLL_S,
                 max_requests: int = MAX_BATCH_REQUESTS, provider: Provider | None = None):
        super().__init__(backend)
        self.provider = provider or provider_for(backend)
        self.journal = journal or MemoryBatchJournal()
        self.settle_s, self.poll_s, self.max_poll_s, self.max_requests = settle_s, poll_s, max_poll_s, max_requests
        self.server = public_url(self.base_url)
        self._cond = threading.Condition()
        self._queue: dict[str, list[_Waiting]] = {}  # key -> callers, not yet in a batch
        self._in_flight: dict[str, tuple[str, list[_Waiting]]] = {}  # key -> (batch id, callers)
        self._answered: dict[str, Completion] = {}  # answers of adopted batches nobody asked for yet
        self._last_arrival = 0.0
        self.gather_s = min(DEFAULT_GATHER_S, settle_s)
        self._participants: dict[int, int] = {}  # participant -> its callers blocked here
        self._reserved: list[int] = []  # places of participants expected, not started yet
        self._next_participant = 0
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        self.batches_submitted: list[str] = []
        self.batches_adopted: list[str] = []

    # -- the backend protocol ----------------------------------------------

    def describe(self) -> dict:
        return {**self.inner.describe(), "batch": True}

    def complete(self, request: CompletionRequest, participant: int | None = None) -> Completion:
        key = request_key(self.identity(), self.inner.request_params(request))
        waiting = _Waiting(request, Future(), time.monotonic(), participant)
        with self._cond:
            if self._closed:
                raise LLMCallError("the batch collector is closed")
            answered = self._answered.pop(key, None)
            if answered is not None:
                return answered
            if key in self._in_flight:
                self._in_flight[key][1].append(waiting)
            else:
                self._queue.setdefault(key, []).append(waiting)
                self._last_arrival = time.monotonic()
            if participant in self._participants:
                self._participants[participant] += 1
            self._start()
            self._cond.notify_all()
        try:
            completion = waiting.future.result()
        finally:
            with self._cond:
                if participant in self._participants:
                    self._participants[participant] -= 1
        return replace(completion, latency_s=time.monotonic() - waiting.queued_at)

    def participant(self) -> "Participant":
        """A view for one caller that will keep asking (a document): the
        collector sends a wave as soon as every participant is blocked. It
        takes a place reserved by `expect()` if one is left."""
        with self._cond:
            if self._reserved:
                return Participant(self, self._reserved.pop(0))
            self._next_participant += 1
            self._participants[self._next_participant] = 0
            return Participant(self, self._next_participant)

    def expect(self, participants: int) -> None:
        """Reserve places for participants about to start (the documents that
        will run at once), so that the first to start does not send its
        requests before the others have asked theirs."""
        with self._cond:
            for _ in range(participants):
                self._next_participant += 1
                self._participants[self._next_participant] = 0
                self._reserved.append(self._next_participant)

    def _leave(self, participant: int) -> None:
        with self._cond:
            self._participants.pop(participant, None)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop dispatching (callers still queued get an error)."""
        with self._cond:
            self._closed = True
            queued, self._queue = self._queue, {}
            self._cond.notify_all()
        for callers in queued.values():
            for waiting in callers:
                waiting.future.set_exception(LLMCallError("the batch collector was closed"))

    # -- the collector -------------------------------------------------------

    def _start(self) -> None:
        if self._dispatcher is None or not self._dispatcher.is_alive():
            self._dispatcher = threading.Thread(target=self._dispatch, name="longsum-batch", daemon=True)
            self._dispatcher.start()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._ready():
                    quiet = self.gather_s if self._all_blocked() else self.settle_s
                    timeout = None if not self._queue else max(0.0, self._last_arrival + quiet - time.monotonic())
                    self._cond.wait(timeout)
                if self._closed:
                    return
                keys = list(self._queue)[: self.max_requests]
                wave = {key: self._queue.pop(key) for key in keys}
            self._send(wave)

    def _all_blocked(self) -> bool:
        """Every participant waits here: no request can come until a batch answers."""
        return bool(self._participants) and all(n > 0 for n in self._participants.values())

    def _ready(self) -> bool:
        if not self._queue:
            return False
        quiet = time.monotonic() - self._last_arrival
        return (len(self._queue) >= self.max_requests or quiet >= self.settle_s
                or (self._all_blocked() and quiet >= self.gather_s))

    def _send(self, wave: dict[str, list[_Waiting]]) -> None:
        """Wait on pending batches that hold some of these requests; send the rest as a new batch."""
        with self._cond:
            for key in [k for k in wave if k in self._in_flight]:  # its batch went out meanwhile
                self._in_flight[key][1].extend(wave.pop(key))
        try:
            pending = self.journal.pending(self.provider.name, self.server, self.model)
        except Exception:  # noqa: BLE001 - without the journal, the requests still go out
            pending = {}
        adopted = {key: batch_id for batch_id, keys in pending.items() for key in keys if key in wave}
        with self._cond:
            adopted = {k: b for k, b in adopted.items() if b not in self._polling}
        for batch_id in dict.fromkeys(adopted.values()):
            mine = {k: wave.pop(k) for k, b in adopted.items() if b == batch_id}
            self.batches_adopted.append(batch_id)
            self._watch(batch_id, mine, set(pending[batch_id]))
        if not wave:
            return
        requests = {key: callers[0].request for key, callers in wave.items()}
        try:
            batch_id, file_id = self.provider.submit(requests)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the callers must not wait forever
            exc = exc if isinstance(exc, LLMError) else LLMCallError(f"cannot submit a batch: {short_error(exc)}")
            for callers in wave.values():
                for waiting in callers:
                    waiting.future.set_exception(exc)
            return
        self.batches_submitted.append(batch_id)
        try:
            self.journal.started(batch_id, self.provider.name, self.server, self.model, list(requests), file_id)
        except Exception:  # noqa: BLE001 - the batch runs anyway; only a resume would not find it
            pass
        self._watch(batch_id, wave, set(requests))

    @property
    def _polling(self) -> set[str]:
        return {batch_id for batch_id, _ in self._in_flight.values()}

    def _watch(self, batch_id: str, wave: dict[str, list[_Waiting]], keys: set[str]) -> None:
        """Poll the batch in a thread of its own; every key of it is in flight,
        so a caller who asks for one later waits on this batch too."""
        with self._cond:
            for key in keys:
                self._in_flight[key] = (batch_id, wave.get(key, []))
        threading.Thread(target=self._poll, args=(batch_id, keys), name=f"longsum-batch-{batch_id}",
                         daemon=True).start()

    def _poll(self, batch_id: str, keys: set[str]) -> None:
        delay = self.poll_s
        try:
            while not self.provider.done(batch_id):
                if self._closed:
                    return
                time.sleep(delay)
                delay = min(self.max_poll_s, delay * POLL_GROWTH)
            with self._cond:
                requests = {k: callers[0].request if callers else None
                            for k, (b, callers) in self._in_flight.items() if b == batch_id}
            # Keys nobody waits on yet (a resumed batch) are read too, and kept for when they are asked.
            outcome = self.provider.outcome(batch_id, {**{k: None for k in keys}, **requests})
        except Exception as exc:  # noqa: BLE001 - whatever it was, the callers must not wait forever
            failure = exc if isinstance(exc, LLMError) else LLMCallError(
                f"batch {batch_id}: cannot read its results: {short_error(exc)}")
            self._release(batch_id, {}, {}, failure=failure)
            return
        unfinished = [k for k in keys if k not in outcome.answers and k not in outcome.errors]
        try:
            self.journal.finished(batch_id, outcome.status, len(outcome.answers), len(outcome.errors), len(unfinished))
        except Exception:  # noqa: BLE001 - the answers matter more than the bookkeeping
            pass
        self._release(batch_id, outcome.answers, outcome.errors)

    def _release(self, batch_id: str, answers: dict, errors: dict, failure: LLMError | None = None) -> None:
        requeued = False
        with self._cond:
            mine = {k: callers for k, (b, callers) in self._in_flight.items() if b == batch_id}
            for key in mine:
                del self._in_flight[key]
            for key, answer in answers.items():
                if not mine.get(key):
                    self._answered[key] = answer
            for key, callers in mine.items():
                if not callers:
                    continue
                if failure is not None:
                    for waiting in callers:
                        waiting.future.set_exception(failure)
                elif key in answers:
                    for waiting in callers:
                        waiting.future.set_result(answers[key])
                elif key in errors:
                    for waiting in callers:
                        waiting.future.set_exception(LLMCallError(errors[key]))
                else:  # left unfinished: into the next batch, alone
                    self._queue.setdefault(key, []).extend(callers)
                    requeued = True
            if requeued:
                self._last_arrival = time.monotonic()
                self._start()
                self._cond.notify_all()


class Participant:
    """One document's view of a BatchingBackend (see `BatchingBackend.participant`);
    `release()` when the document will ask nothing more."""

    def __init__(self, collector: BatchingBackend, number: int):
        self.collector = collector
        self.number = number
        self.backend, self.model, self.base_url = collector.backend, collector.model, collector.base_url

    @property
    def context_window(self) -> int:
        return self.collector.context_window

    def count_tokens(self, text: str) -> int:
        return self.collector.count_tokens(text)

    @property
    def token_estimate(self):
        return self.collector.token_estimate

    @property
    def token_starts(self):
        return getattr(self.collector, "token_starts", None)

    def identity(self) -> dict:
        return self.collector.identity()

    def describe(self) -> dict:
        return self.collector.describe()

    def complete(self, request: CompletionRequest) -> Completion:
        return self.collector.complete(request, participant=self.number)

    def release(self) -> None:
        self.collector._leave(self.number)
