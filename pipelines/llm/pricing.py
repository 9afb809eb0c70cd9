"""USD cost of one LLM call, from genai-prices (Pydantic's maintained price
data, bundled with the package: nothing is fetched at run time).

Cache reads and writes are priced as the provider bills them (Anthropic's
cache writes at 1.25x input, reads at 0.1x; OpenAI's cached input at its
discount). Local backends cost 0. A model or server genai-prices does not know
gets cost NULL, never a guess: in particular an OpenAI-compatible server that
calls its model `gpt-4o-mini` is not billed at OpenAI's prices.
"""

from __future__ import annotations

import functools
import warnings

from pipelines.llm.base import Completion
from pipelines.secrets import public_url, url_host

LOCAL_BACKENDS = {"llamacpp"}
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
