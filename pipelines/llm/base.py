"""The one protocol every LLM backend implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}

# Tokens the chat template adds around each message, and a margin kept free
# in the context window; both only matter when a prompt nearly fills it.
MESSAGE_OVERHEAD_TOKENS = 8
CONTEXT_SAFETY_TOKENS = 16


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" | "length" | "degenerate" (stopped by the request's watch) | backend-specific
    latency_s: float
    cached_input_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to it (Anthropic bills them at 1.25x)
    batch_id: str | None = None  # the provider batch that answered it (billed at the batch discount)


@dataclass(frozen=True)
class CompletionRequest:
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = 0
    # The shared leading part of the prompt (instructions, document) ends
    # after this many messages; backends that support explicit prompt
    # caching mark it.
    cache_prefix_messages: int = 0
    stop: tuple[str, ...] = ()  # generation ends at the first of these (not included in the text)
    # Discourage tokens repeated anywhere in the answer so far, 0 = off. Backends
    # map it to their own knob (llama.cpp repeat_penalty = 1 + value over the
    # whole answer, OpenAI frequency_penalty = value); Anthropic has none and ignores it.
    repeat_penalty: float = 0.0
    # Called with the answer so far during generation; a non-None reason ends
    # it early (finish_reason "degenerate"). Backends that cannot watch a
    # growing answer ignore it. Its `name` belongs in the request identity.
    watch: Callable[[str], str | None] | None = field(default=None, compare=False, repr=False)


class LLMError(RuntimeError):
    """Any backend failure; the message is one line, safe to show and store."""


class LLMConfigError(LLMError):
    """Bad model spec, missing API key, missing model file: retrying won't help."""


class LLMCallError(LLMError):
    """A request that failed after the SDK's own retries."""


class TransientLLMError(LLMCallError):
    """A failure the SDK does not retry but a new attempt may fix (a garbled
    or truncated response body); retried a bounded number of times."""


class PromptTooLongError(LLMError):
    """The prompt leaves no room for the answer in the context window."""


@runtime_checkable
class LLMBackend(Protocol):
    backend: str  # "openai" | "anthropic" | "llamacpp" | ...
    model: str
    context_window: int
    # How many calls it serves at once in one process (None: as many as asked;
    # the API's own limits apply). A local model answers one at a time.
    parallel_calls: int | None

    def complete(self, request: CompletionRequest) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def identity(self) -> dict:
        """What distinguishes this model's answers (goes into the cache key)."""
        ...

    def describe(self) -> dict:
        """Settings worth recording with a run; never secrets."""
        ...


def prompt_tokens(backend: LLMBackend, messages: Sequence[Message]) -> int:
    return sum(backend.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def prompt_bytes(messages: Sequence[Message]) -> int:
    """An upper bound on a prompt's tokens in any tokenizer: a token spans at least one byte."""
    return sum(len(m["content"].encode("utf-8", "surrogatepass")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def fit_max_tokens(backend: LLMBackend, messages: Sequence[Message], wanted: int) -> int:
    """Largest max_tokens <= wanted such that prompt + answer fit the context."""
    if prompt_bytes(messages) + wanted + CONTEXT_SAFETY_TOKENS <= backend.context_window:
        return wanted  # fits even at one token per byte: no count needed (a server's costs a request)
    room = backend.context_window - prompt_tokens(backend, messages) - CONTEXT_SAFETY_TOKENS
    if room < min(wanted, 32):
        raise PromptTooLongError(
            f"prompt needs {prompt_tokens(backend, messages)} tokens, leaving {room} of the "
            f"{backend.context_window}-token context window for the answer"
        )
    return min(wanted, room)


class WrappedBackend:
    """A backend around another (budgets, provider batches): the same model,
    tokenizer, context and cache identity; a subclass changes how it completes."""

    def __init__(self, inner):
        self.inner = inner
        self.backend, self.model = inner.backend, inner.model
        self.base_url = getattr(inner, "base_url", None)
        self.parallel_calls = getattr(inner, "parallel_calls", None)

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    @property
    def token_estimate(self):
        """The wrapped backend's cheap local estimate beside a costly count (see pipelines.chunking.CostlyCounter)."""
        return getattr(self.inner, "token_estimate", None)

    @property
    def token_starts(self):
        """The wrapped backend's token positions of a document, beside a costly count."""
        return getattr(self.inner, "token_starts", None)

    def identity(self) -> dict:
        # The wrapped model's answer is the model's answer: both share the journal's cache.
        return self.inner.identity()



class BoundedBackend(WrappedBackend):
    """At most the semaphore's count of calls in flight, whoever asks: the
    slots of a global API limit that one process holds for all its documents."""

    def __init__(self, inner, semaphore):
        super().__init__(inner)
        self.semaphore = semaphore

    def describe(self) -> dict:
        return self.inner.describe()

    def request_params(self, request: CompletionRequest) -> dict:
        return self.inner.request_params(request)

    def complete(self, request: CompletionRequest) -> Completion:
        with self.semaphore:
            return self.inner.complete(request)
