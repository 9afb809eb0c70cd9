"""What the two HTTP API backends (OpenAI and Anthropic) share: defaults,
how a server is identified in the cache key, what is recorded about it, and
how an SDK error becomes one safe line."""

from __future__ import annotations

from pipelines.secrets import public_url, redact, url_host

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 4


def is_official(base_url: str | None, official_host: str) -> bool:
    return base_url is None or url_host(base_url) == official_host


def server_identity(backend: str, model: str, base_url: str | None, official_host: str) -> dict:
    """The cache identity of a model behind an API.

    The provider's own endpoint keeps the identity {backend, model} that
    caches were written with. Any other server adds its URL (without
    credentials): `openai:llama3.1` on Ollama and on vLLM are different
    models, and a local server that calls its model `gpt-4o-mini` must not
    replay OpenAI's answers."""
    identity = {"backend": backend, "model": model}
    if not is_official(base_url, official_host):
        identity["server"] = public_url(base_url)
    return identity


def describe_api(backend) -> dict:
    """Settings recorded with a run; the base URL without credentials."""
    return {
        "backend": backend.backend, "model": backend.model, "base_url": public_url(backend.base_url),
        "context_window": backend.context_window, "timeout_s": backend.timeout_s, "max_retries": backend.max_retries,
    }


def short_error(exc: Exception) -> str:
    """An SDK error as one line of at most 300 characters, with no secrets."""
    return redact(" ".join(str(exc).split()))[:300]
