"""OpenAI backend, and through a base URL any OpenAI-compatible server
(vLLM, Ollama, llama.cpp's server). Its client is the process's one pooled
HTTP client with the one retry policy (`pipelines.llm.http`): the chat
calls, the server's `/tokenize` and the Batch API's requests all go through it."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from pipelines.llm.api import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    api_failure,
    describe_api,
    is_official,
    server_identity,
)
from pipelines.llm.api import short_error as _short
from pipelines.llm.base import Completion, CompletionRequest, LLMCallError, LLMConfigError, TransientLLMError
from pipelines.llm.http import openai_client
from pipelines.llm.tokenizers import (
    UNKNOWN_TOKENIZER_MARGIN,
    ServerTokenizer,
    count_cl100k,
    count_with_margin,
    openai_counter,
)
from pipelines.secrets import public_url

OFFICIAL_HOST = "api.openai.com"
DEFAULT_COMPATIBLE_CONTEXT = 8192
# Placeholder key for local OpenAI-compatible servers that ignore it.
NO_KEY = "sk-no-key-required"

CONTEXT_WINDOWS = {
    "gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576, "gpt-5": 400_000, "gpt-5-mini": 400_000, "gpt-5-nano": 400_000,
    "gpt-4-turbo": 128_000, "gpt-4": 8_192, "gpt-3.5-turbo": 16_385,
}


def known_context_window(model: str) -> int | None:
    matches = [name for name in CONTEXT_WINDOWS if model == name or model.startswith(name + "-")]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else None


class OpenAIBackend:
    backend = "openai"
    parallel_calls = None  # as many as the server and the global limit allow

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
            import openai
        except ImportError:
            raise LLMConfigError("the openai package is not installed (pip install openai)") from None
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/") or None
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if self.base_url is None:
                raise LLMConfigError(
                    "OPENAI_API_KEY is not set: export it, or pass --base-url for a local OpenAI-compatible server"
                )
            api_key = NO_KEY
        self.context_window = context_window or known_context_window(model) or DEFAULT_COMPATIBLE_CONTEXT
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.official = is_official(self.base_url, OFFICIAL_HOST)
        self._openai = openai
        self._client = openai_client(api_key, self.base_url, timeout_s, max_retries, http_client)
        self._count_lock = threading.Lock()
        if self.official:
            self.tokenizer, self._count = openai_counter(model)
        else:  # decided on the first count: the server's /tokenize, or a margin
            self.tokenizer, self._count = None, None
            self._server_tokenizer = ServerTokenizer(self._client, self.base_url, model)

    def identity(self) -> dict:
        return server_identity(self.backend, self.model, self.base_url, OFFICIAL_HOST)

    def describe(self) -> dict:
        try:
            tokenizer = self.tokenizer_name()
        except LLMCallError:  # the server is not reached (yet): the run's first count says why, in the run
            tokenizer = "server /tokenize (not reached)"
        return {**describe_api(self), "tokenizer": tokenizer}

    def tokenizer_name(self) -> str:
        self._choose_counter()
        return self.tokenizer

    def count_tokens(self, text: str) -> int:
        if self._count is None:
            self._choose_counter()
        return self._count(text)

    @property
    def token_estimate(self):
        """When every count is a /tokenize request: a cheap local count roughly
        proportional to it (cl100k), for chunking to pack with; else None."""
        return count_cl100k if self._counts_on_server() else None

    @property
    def token_starts(self):
        """When every count is a /tokenize request: text -> where each of the
        server's tokens of it starts (one request per document), else None."""
        return self._server_tokenizer.token_starts if self._counts_on_server() else None

    def _counts_on_server(self) -> bool:
        self._choose_counter()
        server = getattr(self, "_server_tokenizer", None)
        return server is not None and self._count == server.count and server.local is None

    def _choose_counter(self) -> None:
        with self._count_lock:  # one probe, whichever thread counts first
            if self._count is not None:
                return
            # LLMCallError when /tokenize could not be asked at all (after every retry): never
            # silently another tokenizer, whose chunks and requests would differ
            if self._server_tokenizer.probe():
                self.tokenizer, self._count = self._server_tokenizer.describe(), self._server_tokenizer.count
            else:
                self.tokenizer = f"cl100k_base x{UNKNOWN_TOKENIZER_MARGIN:g} (server has no /tokenize)"
                self._count = count_with_margin

    def request_params(self, request: CompletionRequest) -> dict:
        """The body of the chat-completions request (also a batch line's body)."""
        # The official API wants max_completion_tokens (required by reasoning
        # models); compatible servers generally only know max_tokens.
        length_arg = "max_tokens" if self.base_url else "max_completion_tokens"
        kwargs = {"model": self.model, "messages": list(request.messages), "temperature": request.temperature,
                  length_arg: request.max_tokens}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        stop = list(request.stop) + list(getattr(request.watch, "stop_sequences", ()))
        if stop:
            # The API takes at most four. The answer arrives whole, so the watch
            # acts only through its stop sequences (where a copy of the prompt begins).
            kwargs["stop"] = list(dict.fromkeys(stop))[:4]
        if request.repeat_penalty:
            kwargs["frequency_penalty"] = min(2.0, request.repeat_penalty)  # the API's range is [-2, 2]
        return kwargs

    def complete(self, request: CompletionRequest) -> Completion:
        kwargs = self.request_params(request)
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(**kwargs)
        except self._openai.AuthenticationError:
            raise LLMConfigError(f"{self._where()} rejected the API key (401); check OPENAI_API_KEY") from None
        except self._openai.NotFoundError as exc:
            raise LLMConfigError(f"{self._where()}: model {self.model!r} not found ({_short(exc)})") from None
        except self._openai.APIResponseValidationError as exc:
            raise TransientLLMError(f"{self._where()} sent a response that does not fit the API: {_short(exc)}") from None
        except self._openai.APIError as exc:
            raise LLMCallError(api_failure(self._openai, exc, self._where(), self.timeout_s, started)) from None
        except self._openai.OpenAIError as exc:
            raise LLMCallError(f"{self._where()}: {_short(exc)}") from None
        except ValueError as exc:  # json.JSONDecodeError: a garbled or truncated body
            raise TransientLLMError(f"{self._where()} sent a malformed response ({_short(exc)})") from None
        completion = _completion_from(response, latency=time.perf_counter() - started)
        if self._count is not None and self._counts_on_server():  # the answer's count is the server's usage
            self._server_tokenizer.remember(completion.text, completion.output_tokens)
        return completion

    def _where(self) -> str:
        return public_url(self.base_url) or "the OpenAI API"


def completion_from_body(body: dict, latency: float, batch_id: str | None = None) -> Completion:
    """A chat-completions response body (a batch result line's) as a Completion."""
    from openai.types.chat import ChatCompletion

    completion = _completion_from(ChatCompletion.model_validate(body), latency)
    return replace(completion, batch_id=batch_id)


def _completion_from(response, latency: float) -> Completion:
    if not getattr(response, "choices", None):
        raise TransientLLMError("the server answered without any choices")
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return Completion(
        text=((choice.message.content if choice.message else None) or "").strip(),
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason=choice.finish_reason or "stop",
        latency_s=latency,
        cached_input_tokens=int(getattr(details, "cached_tokens", 0) or 0) if details else 0,
    )

