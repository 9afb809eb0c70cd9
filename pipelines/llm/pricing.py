"""USD cost of one LLM call, from genai-prices (Pydantic's maintained price
data, bundled with the package: nothing is fetched at run time).

Cache reads and writes are priced as the provider bills them (Anthropic's
cache writes at 1.25x input, reads at 0.1x; OpenAI's cached input at its
discount). Local backends cost 0. A model or server genai-prices does not know
gets cost NULL, never a guess: in particular an OpenAI-compatible server that
calls its model `gpt-4o-mini` is not billed at OpenAI's prices -- unless
LONGSUM_PRICE_AS names the provider model it stands for (a proxy in front of
a provider, or a test server measuring what a run would cost).

Calls answered through a provider batch (OpenAI Batch API, Anthropic Message
Batches) cost BATCH_DISCOUNT of the list price; genai-prices has no batch
prices, and both providers bill batches at half the synchronous price.
"""

from __future__ import annotations

import functools
import os
import warnings

from pipelines.llm.base import Completion
from pipelines.secrets import public_url, url_host

LOCAL_BACKENDS = {"llamacpp"}
BATCH_DISCOUNT = 0.5
PRICE_AS_ENV = "LONGSUM_PRICE_AS"
PROVIDERS = {"openai": ("openai", "api.openai.com"), "anthropic": ("anthropic", "api.anthropic.com")}


def cost_usd(backend: str, model: str, completion: Completion, base_url: str | None = None) -> float | None:
    if backend in LOCAL_BACKENDS:
        return 0.0
    provider = _provider(backend, base_url)
    if provider is None:
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    # genai-prices' input_tokens is the whole prompt, cache reads and writes included.
    usage = Usage(
        input_tokens=completion.input_tokens,
        cache_read_tokens=completion.cached_input_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        output_tokens=completion.output_tokens,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            price = calc_price(usage, model, **provider)
    except (LookupError, ValueError):
        return None
    return float(price.total_price)


def backend_cost(backend, completion: Completion) -> float | None:
    """What one call of this backend cost: list price, a server priced as
    LONGSUM_PRICE_AS, and the batch discount when a batch answered it."""
    name, model, base_url = price_target(backend.backend, backend.model, getattr(backend, "base_url", None))
    cost = cost_usd(name, model, completion, base_url)
    if cost is not None and completion.batch_id:
        cost *= BATCH_DISCOUNT
    return cost


def price_target(backend: str, model: str, base_url: str | None) -> tuple[str, str, str | None]:
    """(backend, model, base_url) whose prices apply: the endpoint itself, or,
    for a server genai-prices does not know, the provider model named by
    LONGSUM_PRICE_AS (e.g. `openai:gpt-4o-mini`)."""
    stand_in = os.environ.get(PRICE_AS_ENV, "").strip()
    if stand_in and backend not in LOCAL_BACKENDS and _provider(backend, base_url) is None:
        other, _, other_model = stand_in.partition(":")
        if other in PROVIDERS and other_model:
            return other, other_model, None
    return backend, model, base_url


def price_known(backend: str, model: str, base_url: str | None = None) -> bool:
    """Whether calls to this endpoint get a price (False: cost NULL)."""
    probe = Completion(text="", input_tokens=1000, output_tokens=1000, finish_reason="stop", latency_s=0.0)
    return cost_usd(*price_target(backend, model, base_url)[:2], probe, price_target(backend, model, base_url)[2]) is not None


def _provider(backend: str, base_url: str | None) -> dict | None:
    """genai-prices' provider for this endpoint: the provider itself on its own
    host, a known provider (Groq, Together, OpenRouter, Azure ...) by its API
    URL, and None (price unknown) for any other server."""
    provider_id, official_host = PROVIDERS.get(backend, (None, None))
    if provider_id is None:
        return None
    if base_url is None or url_host(base_url) == official_host:
        return {"provider_id": provider_id}
    url = public_url(base_url)
    return {"provider_api_url": url} if _known_api_url(url) else None


@functools.lru_cache(maxsize=64)
def _known_api_url(url: str) -> bool:
    import re

    try:
        from genai_prices.data_snapshot import get_snapshot
    except ImportError:
        return False
    return any(p.api_pattern and re.match(p.api_pattern, url) for p in get_snapshot().providers)
