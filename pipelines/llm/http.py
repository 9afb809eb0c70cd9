"""One HTTP client and one retry policy for every request longsum makes.

Every request to a model server goes through an official SDK client built
here (`openai_client`, `anthropic_client`): chat completions, a compatible
server's `/tokenize` (sent with the same client's `post`, see
`pipelines.llm.tokenizers.ServerTokenizer`), models, batch file uploads,
batch polls and result downloads. All of them share:

* **one pooled keep-alive connection pool per process** (`shared_client`),
  bounded by `MAX_CONNECTIONS`; a request reuses an idle connection to its
  server instead of opening a new TCP (and TLS) connection;
* **one retry policy**, the SDKs' own request loop configured here: up to
  `max_retries` (default `DEFAULT_MAX_RETRIES`) further attempts after a
  transient failure -- a connection reset, refused or closed without an
  answer, a timeout, HTTP 408, 409, 429 (waiting what `Retry-After` says, up
  to two minutes) and 5xx -- with exponential backoff from 0.5 s to 8 s,
  each wait shortened by a random 0-25 % (jitter). A retried request keeps
  its idempotency key, and it is one call for longsum: the journal records
  the answer once (`pipelines.llm.recording`).
* What is not transient fails at once: 400 (a context overflow among them),
  401, 403, 404, 422.

When the attempts run out, `failure_note` says what the last failure was,
how many attempts were made and over how long; the backends put it in the
one-line error that fails the step, and so the run's `error`.

No other module opens a connection of its own (no `urllib`, no bare
`httpx`): tests/test_http.py checks it.
"""

from __future__ import annotations

import os
import threading
import time

DEFAULT_TIMEOUT_S = 120.0
# 7 attempts in all. Against a server that fails one request in five (the
# flaky test server: 15 % resets, 5 % 503), a request fails every attempt
# with p = 0.2^7 ~ 1.3e-5 (0.2^5 ~ 3e-4 with 4 retries: a few hundred
# requests of a small corpus would lose a document now and then); the
# waits add up to at most ~24 s before a request is given up.
DEFAULT_MAX_RETRIES = 6
# The pool is shared by every backend of the process; requests in flight are
# bounded by the run's concurrency (documents x calls per document), so this
# cap only guards against a runaway caller. Idle connections beyond the
# keep-alive count are closed, and so is any idle for KEEPALIVE_S.
MAX_CONNECTIONS = 256
MAX_KEEPALIVE = 64
KEEPALIVE_S = 30.0
TRANSIENT_STATUS = frozenset({408, 409, 429})  # and every 5xx

_lock = threading.Lock()
_client = None
_client_pid: int | None = None


def shared_client():
    """The process's pooled keep-alive client (the SDKs' HTTP stack, httpx2).
    A forked worker makes its own (a pool's sockets must not cross a fork)."""
    global _client, _client_pid
    import httpx2

    with _lock:
        if _client is None or _client_pid != os.getpid() or _client.is_closed:
            _client = httpx2.Client(
                limits=httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE,
                                     keepalive_expiry=KEEPALIVE_S),
                timeout=httpx2.Timeout(DEFAULT_TIMEOUT_S, connect=10.0),
                follow_redirects=True,
            )
            _client_pid = os.getpid()
        return _client


def openai_client(api_key: str, base_url: str | None, timeout_s: float = DEFAULT_TIMEOUT_S,
                  max_retries: int = DEFAULT_MAX_RETRIES, http_client=None):
    import openai

    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries,
                         http_client=http_client or shared_client())


def anthropic_client(api_key: str, base_url: str | None, timeout_s: float = DEFAULT_TIMEOUT_S,
                     max_retries: int = DEFAULT_MAX_RETRIES, http_client=None):
    import anthropic

    return anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries,
                               http_client=http_client or shared_client())


def is_transient_status(status: int | None) -> bool:
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def attempts(exc: BaseException) -> int | None:
    """How many attempts the SDK made before raising `exc` (it numbers each
    one in the `x-stainless-retry-count` header of the request), if known."""
    request = getattr(exc, "request", None)
    if request is None and getattr(exc, "response", None) is not None:
        request = exc.response.request
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1
    except (AttributeError, TypeError, ValueError):
        return None


def _chain(exc: BaseException):
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def connect_failed(exc: BaseException) -> bool:
    """True when no connection could be made at all (refused, no route), as
    opposed to one that was reset or closed while the request was out."""
    return any(type(e).__name__ in ("ConnectError", "ConnectionRefusedError", "ConnectTimeout") for e in _chain(exc))


def cause(exc: BaseException) -> str:
    """The transport failure under an SDK connection error, in a few words
    ("ConnectionResetError: [Errno 104] Connection reset by peer")."""
    inner = exc.__cause__ or exc.__context__
    seen = 0
    while inner is not None and seen < 5:
        deeper = inner.__cause__ or inner.__context__
        if deeper is None or isinstance(inner, OSError):
            break
        inner, seen = deeper, seen + 1
    if inner is None:
        return type(exc).__name__
    text = " ".join(str(inner).split())[:200]
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def failure_note(exc: BaseException, started: float) -> str:
    """'(5 attempts over 12.3 s)': how hard the policy tried before giving up."""
    n = attempts(exc)
    spent = time.perf_counter() - started
    return f"({n} attempt{'s' if n != 1 else ''} over {spent:.1f} s)" if n else f"(after {spent:.1f} s)"
