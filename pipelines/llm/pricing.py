"""USD prices of API models, per million tokens: (input, cached input, output).

List prices as published by the providers (checked 2025); a model missing
here gets cost NULL, never a guess. Local backends cost 0.
"""

from __future__ import annotations

from pipelines.llm.base import Completion

PRICES_PER_MTOK: dict[str, dict[str, tuple[float, float, float]]] = {
    "openai": {
        "gpt-4o-mini": (0.15, 0.075, 0.60),
        "gpt-4o": (2.50, 1.25, 10.00),
        "gpt-4.1": (2.00, 0.50, 8.00),
        "gpt-4.1-mini": (0.40, 0.10, 1.60),
        "gpt-4.1-nano": (0.10, 0.025, 0.40),
        "gpt-5": (1.25, 0.125, 10.00),
        "gpt-5-mini": (0.25, 0.025, 2.00),
        "gpt-5-nano": (0.05, 0.005, 0.40),
        "gpt-4-turbo": (10.00, 10.00, 30.00),
        "gpt-4": (30.00, 30.00, 60.00),
        "gpt-3.5-turbo": (0.50, 0.50, 1.50),
    },
    "anthropic": {
        "claude-3-5-haiku": (0.80, 0.08, 4.00),
        "claude-3-5-sonnet": (3.00, 0.30, 15.00),
        "claude-3-7-sonnet": (3.00, 0.30, 15.00),
        "claude-haiku-4-5": (1.00, 0.10, 5.00),
        "claude-sonnet-4": (3.00, 0.30, 15.00),
        "claude-sonnet-4-5": (3.00, 0.30, 15.00),
        "claude-opus-4": (15.00, 1.50, 75.00),
        "claude-opus-4-1": (15.00, 1.50, 75.00),
        "claude-3-haiku": (0.25, 0.03, 1.25),
        "claude-3-opus": (15.00, 1.50, 75.00),
    },
}
LOCAL_BACKENDS = {"llamacpp"}


def price(backend: str, model: str) -> tuple[float, float, float] | None:
    """Longest known model-name prefix wins: 'gpt-4o-mini-2024-07-18' -> 'gpt-4o-mini'."""
    table = PRICES_PER_MTOK.get(backend, {})
    matches = [name for name in table if model == name or model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


def cost_usd(backend: str, model: str, completion: Completion) -> float | None:
    if backend in LOCAL_BACKENDS:
        return 0.0
    p = price(backend, model)
    if p is None:
        return None
    input_price, cached_price, output_price = p
    fresh = max(0, completion.input_tokens - completion.cached_input_tokens)
    return (fresh * input_price + completion.cached_input_tokens * cached_price + completion.output_tokens * output_price) / 1e6
