"""LLM backends behind one protocol, chosen by a model spec string:

    llamacpp                  the embedded Qwen2.5-Coder-1.5B-Instruct (offline default)
    llamacpp:gemma-3-270m     the embedded Gemma 3 270M base model (fast; cannot summarize)
    llamacpp:/path/model.gguf any local GGUF file
    openai:MODEL              OpenAI, or any OpenAI-compatible server with a base URL
    anthropic:MODEL           Anthropic

Backend modules are imported only when their spec is used, so the CLI starts
without loading llama.cpp or the SDKs.
"""

from __future__ import annotations

from pipelines.defaults import DEFAULT_MODEL
from pipelines.llm.base import (
    Completion,
    CompletionRequest,
    LLMBackend,
    LLMCallError,
    LLMConfigError,
    LLMError,
    PromptTooLongError,
)

DEFAULT_SPEC = DEFAULT_MODEL
SPEC_HELP = "llamacpp, llamacpp:gemma-3-270m, llamacpp:/path/model.gguf, openai:MODEL or anthropic:MODEL"

__all__ = [
    "Completion", "CompletionRequest", "LLMBackend", "LLMCallError", "LLMConfigError", "LLMError",
    "PromptTooLongError", "DEFAULT_SPEC", "parse_spec", "resolve", "token_counter", "is_tiny_model",
    "JUDGE_NOTICE", "judge_notice_text",
]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'openai:gpt-4o-mini' -> ('openai', 'gpt-4o-mini'); 'llamacpp' -> ('llamacpp', None)."""
    backend, sep, model = (spec or "").strip().partition(":")
    backend = backend.lower()
    if backend not in ("llamacpp", "openai", "anthropic"):
        raise LLMConfigError(f"unknown model spec {spec!r}; use {SPEC_HELP}")
    if backend in ("openai", "anthropic") and not model:
        raise LLMConfigError(f"model spec {spec!r} names no model; use {backend}:MODEL")
    if sep and not model:
        raise LLMConfigError(f"model spec {spec!r} is missing the part after ':'")
    return backend, model or None


def is_tiny_model(spec: str) -> bool:
    """True for the embedded Gemma 270M base model: it can run every step but
    cannot summarize or judge, so the faces say so when it is chosen."""
    from pipelines.llm.embedded import GEMMA, lookup

    backend, model = parse_spec(spec)
    return backend == "llamacpp" and model is not None and lookup(model) is GEMMA


JUDGE_NOTICE = (
    "note: {what} judged by Gemma 3 270M, a tiny base model, which exercises the checker offline "
    "but cannot judge; leave out --judge-model for the embedded instruct model, or pass openai:MODEL or anthropic:MODEL"
)


def judge_notice_text(judged) -> str:
    """The one line that says these metrics (names, e.g. BooookScore, faithfulness) were judged by
    the tiny model: the CLI prints it, the report shows it beside the scores."""
    judged = list(judged)
    return JUDGE_NOTICE.format(what=" and ".join(judged) + (" are" if len(judged) > 1 else " is"))


def resolve(
    spec: str = DEFAULT_SPEC,
    *,
    base_url: str | None = None,
    context_window: int | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    reuse_prefix: bool = True,
) -> LLMBackend:
    backend, model = parse_spec(spec)
    api_options = {k: v for k, v in (("timeout_s", timeout_s), ("max_retries", max_retries)) if v is not None}
    if backend == "llamacpp":
        if base_url:
            raise LLMConfigError("--base-url is for openai: specs (any OpenAI-compatible server), not llamacpp")
        from pipelines.llm.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, context_window=context_window, reuse_prefix=reuse_prefix)
    if backend == "openai":
        from pipelines.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url=base_url, context_window=context_window, **api_options)
    from pipelines.llm.anthropic_backend import AnthropicBackend

    return AnthropicBackend(model, base_url=base_url, context_window=context_window, **api_options)


def token_counter(spec: str = DEFAULT_SPEC, context_window: int | None = None):
    """(tokenizer name, count function) for a spec, without API keys or a loaded model."""
    backend, model = parse_spec(spec)
    if backend == "llamacpp":
        llama = resolve(spec, context_window=context_window)
        return f"llamacpp:{llama.model}", llama.count_tokens
    if backend == "openai":
        # The official API's encoding for this model (o200k or cl100k; a
        # margin for names tiktoken does not know); a server's own counts need
        # the backend (resolve with its base URL).
        from pipelines.llm.tokenizers import openai_counter

        return openai_counter(model)
    from pipelines.llm.anthropic_backend import count_tokens

    return "cl100k_base x1.15 (Claude approximation)", count_tokens
