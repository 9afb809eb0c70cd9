"""A budget in batch mode is a budget (issue 24, item 6): every caller blocks
at once in batch mode, so a check made before each call let a whole wave
through and overshot by a wave. Each call now reserves its upper bound
(pipelines/budget.py): a wave holds what the remaining budget allows, and the
total passes the budget by at most one request's upper bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer
from pipelines.corpus import squality_items
from pipelines.llm.tokenizers import count_cl100k

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "squality" / "dev_subset.jsonl"
PRICE_AS = "openai:gpt-4o-mini"
# A wave goes out once every document waits (the collector's all-blocked rule); settle_s is its
# fallback. At 0.3 s a loaded CI machine sent a first wave of one request before the other
# documents had asked, and the budget then let that small wave through; at 5 s a full suite
# on two pinned workers did it once more (one document's calls, all within the budget).
FAST = {"settle_s": 15.0, "poll_s": 0.02}


def _evaluate(db: Path, base_url: str, max_cost: float | None):
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    store = Store(db)
    config = RunConfig(method="hierarchical", model="openai:served", base_url=base_url, context_window=32_768,
                       chunk_size=1024, summary_words=150, concurrency=16)
    outcomes = evaluate_in_process(squality_items(SUBSET), [config], store, batch=True, max_cost=max_cost,
                                   metrics=[], concurrency=3, **FAST)
    return store, outcomes


def _upper_bound(request: dict) -> float:
    """What the call could have cost at most: its prompt and max_tokens at the batch price."""
    from pipelines.llm.base import MESSAGE_OVERHEAD_TOKENS, Completion
    from pipelines.llm.pricing import BATCH_DISCOUNT, cost_usd

    prompt = sum(count_cl100k(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in request["messages"])
    return BATCH_DISCOUNT * cost_usd("openai", "gpt-4o-mini", Completion("", prompt, request["max_tokens"], "length", 0))


@pytest.mark.slow
def test_a_batch_wave_is_sized_by_the_remaining_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768) as server:
        # Unbudgeted, the first wave is every story's chunk summaries at once.
        free, _ = _evaluate(tmp_path / "free.duckdb", server.base_url, None)
        first_batch = free.execute("SELECT batch_id FROM llm_batches ORDER BY created_at LIMIT 1")[0][0]
        (wave, wave_cost), = free.execute("SELECT count(*), sum(cost_usd) FROM llm_calls WHERE batch_id = ?",
                                          [first_batch])
        assert wave >= 6
        limit = wave_cost * 0.6
        store, outcomes = _evaluate(tmp_path / "budget.duckdb", server.base_url, limit)
    assert outcomes and all(o.status == "failed" and "budget" in o.error for o in outcomes)
    calls = store.execute("SELECT request, cost_usd, batch_id FROM llm_calls WHERE NOT cached AND status = 'ok'")
    spent = sum(cost for _, cost, _ in calls)
    most = max(_upper_bound(json.loads(request)) for request, _, _ in calls)
    waves = store.execute("SELECT n_requests FROM llm_batches ORDER BY created_at")
    print(f"first wave unbudgeted: {wave} requests, ${wave_cost:.6f}; budget ${limit:.6f}: spent ${spent:.6f} "
          f"in waves of {[n for (n,) in waves]}, one request's upper bound ${most:.6f}")
    assert all(batch is not None for _, _, batch in calls)  # batch mode throughout
    assert limit <= spent <= limit + most  # stopped at the budget, over it by one request's bound at most
    assert spent < wave_cost  # not the whole first wave
    assert 1 < max(n for (n,) in waves) < wave  # a wave holds what the budget left allows
