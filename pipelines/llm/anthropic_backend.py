"""Anthropic backend (Messages API). The shared prompt prefix is marked with
`cache_control` so repeated calls over one document hit the prompt cache."""

from __future__ import annotations

import inspect
import os
import time

from pipelines.llm.api import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, api_failure, describe_api, server_identity
from pipelines.llm.api import short_error as _short
from pipelines.llm.base import Completion, CompletionRequest, LLMCallError, LLMConfigError, TransientLLMError
from pipelines.llm.http import anthropic_client
from pipelines.llm.tokenizers import count_cl100k

OFFICIAL_HOST = "api.anthropic.com"
DEFAULT_CONTEXT_WINDOW = 200_000
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
# Claude's tokenizer is not public and cl100k undercounts it; scale so budgets
# stay on the safe side.
TOKEN_COUNT_FACTOR = 1.15
TOKENIZER = f"cl100k_base x{TOKEN_COUNT_FACTOR:g} (Claude approximation)"
CACHE_CONTROL = {"type": "ephemeral"}


class AnthropicBackend:
    backend = "anthropic"
    parallel_calls = None  # as many as the API and the global limit allow

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        context_window: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client=None,
    ):
        try:
            import anthropic
        except ImportError:
            raise LLMConfigError("the anthropic package is not installed (pip install anthropic)") from None
        api_key = os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise LLMConfigError("ANTHROPIC_API_KEY is not set: export it to use anthropic: models")
        self.model = model
        self.base_url = base_url
        self.context_window = context_window or DEFAULT_CONTEXT_WINDOW
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._anthropic = anthropic
        self._client = anthropic_client(api_key, base_url, timeout_s, max_retries, http_client)
        # Recent SDKs dropped `temperature` from messages.create (the API
        # ignores it for current models); pass it only where it exists.
        self._accepts_temperature = "temperature" in inspect.signature(self._client.messages.create).parameters

    def identity(self) -> dict:
        return server_identity(self.backend, self.model, self.base_url, OFFICIAL_HOST)

    def describe(self) -> dict:
        return {**describe_api(self), "tokenizer": TOKENIZER}

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def request_params(self, request: CompletionRequest, temperature: bool | None = None) -> dict:
        """The Messages API parameters of a request (also a Message Batch request's `params`)."""
        system, messages = to_anthropic_messages(request.messages, request.cache_prefix_messages)
        kwargs = {"model": self.model, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            kwargs["system"] = system
        if self._accepts_temperature if temperature is None else temperature:
            kwargs["temperature"] = request.temperature
        # The answer arrives whole, so the watch acts only through its stop
        # sequences (where a copy of the prompt begins). The API has no repeat penalty.
        stop = list(dict.fromkeys(request.stop + _watch_stops(request)))
        if stop:
            kwargs["stop_sequences"] = stop
        return kwargs

    def complete(self, request: CompletionRequest) -> Completion:
        kwargs = self.request_params(request)
        started = time.perf_counter()
        try:
            response = self._client.messages.create(**kwargs)
        except self._anthropic.AuthenticationError:
            raise LLMConfigError("the Anthropic API rejected the API key (401); check ANTHROPIC_API_KEY") from None
        except self._anthropic.NotFoundError as exc:
            raise LLMConfigError(f"Anthropic: model {self.model!r} not found ({_short(exc)})") from None
        except self._anthropic.APIError as exc:
            raise LLMCallError(api_failure(self._anthropic, exc, "the Anthropic API", self.timeout_s, started)) from None
        except self._anthropic.AnthropicError as exc:
            raise LLMCallError(f"Anthropic: {_short(exc)}") from None
        except ValueError as exc:  # json.JSONDecodeError: a garbled or truncated body
            raise TransientLLMError(f"the Anthropic API sent a malformed response ({_short(exc)})") from None
        return completion_from_message(response, request, time.perf_counter() - started)


def _watch_stops(request: CompletionRequest) -> tuple[str, ...]:
    return tuple(getattr(request.watch, "stop_sequences", ()))


def completion_from_message(response, request: CompletionRequest, latency: float,
                            batch_id: str | None = None) -> Completion:
    """A Messages API answer (synchronous, or a Message Batch result) as a Completion."""
    usage = response.usage
    cache_read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
    cache_write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    watch_stops = _watch_stops(request)
    return Completion(
        text="".join(block.text for block in response.content if block.type == "text").strip(),
        # Anthropic's input_tokens excludes cached ones; report the whole prompt.
        input_tokens=int(usage.input_tokens) + cache_read + cache_write,
        output_tokens=int(usage.output_tokens),
        finish_reason=(
            "degenerate" if response.stop_reason == "stop_sequence" and response.stop_sequence in watch_stops
            and response.stop_sequence not in request.stop
            else _FINISH.get(response.stop_reason or "", response.stop_reason or "stop")
        ),
        latency_s=latency,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        batch_id=batch_id,
    )


def count_tokens(text: str) -> int:
    """Claude's tokenizer is not public: cl100k scaled up, to keep budgets safe."""
    return int(count_cl100k(text) * TOKEN_COUNT_FACTOR + 0.5)


def to_anthropic_messages(messages, cache_prefix_messages: int) -> tuple[list[dict], list[dict]]:
    """Split off the system prompt and mark the end of the shared prefix."""
    system: list[dict] = []
    converted: list[dict] = []
    for i, message in enumerate(messages):
        block = {"type": "text", "text": message["content"]}
        if i == cache_prefix_messages - 1:
            block["cache_control"] = CACHE_CONTROL
        if message["role"] == "system":
            system.append(block)
        else:
            converted.append({"role": message["role"], "content": [block]})
    return system, converted

