"""What the two HTTP API backends (OpenAI and Anthropic) share: defaults,
how a server is identified in the cache key, what is recorded about it, and
how an SDK error becomes one safe line."""

from __future__ import annotations

from pipelines.llm.http import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S  # noqa: F401 (re-exported)
from pipelines.secrets import public_url, redact, url_host


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


def api_failure(sdk, exc: Exception, where: str, timeout_s, started: float) -> str:
    """One line for a request the SDK gave up on (`sdk`: the openai or the
    anthropic module, whose exception classes match): what failed, and for a
    transient failure how many attempts the retry policy made over how long."""
    from pipelines.llm.http import cause, connect_failed, failure_note, is_transient_status

    if isinstance(exc, sdk.APITimeoutError):
        seconds = getattr(timeout_s, "read", timeout_s)  # a number, or the SDK's Timeout
        return f"{where} did not answer within {seconds:g} s {failure_note(exc, started)}"
    if isinstance(exc, sdk.APIConnectionError):
        verb = "cannot connect to" if connect_failed(exc) else "lost the connection to"
        return f"{verb} {where}: {redact(cause(exc))} {failure_note(exc, started)}"
    if isinstance(exc, sdk.APIStatusError):
        line = f"{where} returned HTTP {exc.status_code}: {short_error(exc)}"
        return f"{line} {failure_note(exc, started)}" if is_transient_status(exc.status_code) else line
    return f"{where}: {short_error(exc)}"
