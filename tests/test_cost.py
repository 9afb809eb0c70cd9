"""Cost preflight, budgets and prompt-cache accounting, against the
OpenAI-compatible test server (tests/fake_openai_server.py) counting tokens
with a real tokenizer (cl100k) that it also offers on /tokenize."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer
from pipelines.corpus import squality_items
from pipelines.llm.tokenizers import count_cl100k

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "squality" / "dev_subset.jsonl"
FULL = ROOT.parent / "shared" / "data" / "squality" / "dev.jsonl"
BOOK = ROOT / "examples" / "doyle_scandal_in_bohemia.txt"
PRICE_AS = "openai:gpt-4o-mini"


@pytest.fixture()
def server():
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768) as fake:
        yield fake


def _config(method: str, base_url: str, **extra):
    from pipelines.runner import RunConfig

    return RunConfig(method=method, model="openai:served", base_url=base_url, context_window=32_768,
                     chunk_size=1024, summary_words=150, **extra)


def _real_usage(store, run_id: str) -> tuple[int, int, int]:
    ((calls, inputs, outputs),) = store.execute(
        "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) FROM llm_calls "
        "WHERE run_id = ? AND status = 'ok' AND NOT cached", [run_id])
    return calls, inputs, outputs


def _bracket(path: Path, limit: int | None, server, tmp_path, **extra) -> list[tuple]:
    """For every story and both LLM methods: (estimate, real calls, real input, real output)."""
    from pipelines.llm.openai_backend import OpenAIBackend
    from pipelines.plan import estimate_document
    from pipelines.runner import summarize_document
    from pipelines.store import Store

    store = Store(tmp_path / "bracket.duckdb")
    seen = []
    for item in squality_items(path, limit):
        for method in ("hierarchical", "incremental"):
            config = _config(method, server.base_url, **extra)
            backend = OpenAIBackend("served", base_url=server.base_url, context_window=32_768)
            estimate = estimate_document(item.document, config, backend)
            result = summarize_document(item.document, config, store, backend=backend)
            seen.append((item.name, method, estimate, *_real_usage(store, result.run_id)))
    return seen


def _assert_bracketed(seen: list[tuple]) -> None:
    for name, method, estimate, calls, inputs, outputs in seen:
        where = f"{name} {method}"
        assert estimate.calls_min <= calls <= estimate.calls_max, (where, calls, estimate)
        assert estimate.input_min <= inputs <= estimate.input_max, (where, inputs, estimate)
        assert outputs <= estimate.output_max, (where, outputs, estimate)
        assert estimate.cost_high is not None and estimate.cost_low <= estimate.cost_high


@pytest.mark.slow
def test_preflight_brackets_the_real_tokens_of_squality_stories(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    seen = _bracket(SUBSET, None, server, tmp_path)
    assert len(seen) == 6
    _assert_bracketed(seen)
    # Not trivially loose: the test server answers every step at its first attempt, which is the
    # plan's typical run -- the same calls, and about the same prompt tokens.
    for name, method, e, calls, inputs, _ in seen:
        assert calls == e.calls_typical, (name, method, calls, e)
        assert abs(e.input_typical - inputs) <= 0.15 * inputs, (name, method, inputs, e)


@pytest.mark.slow
def test_preflight_brackets_a_run_that_compresses_with_scope(server, tmp_path, monkeypatch):
    """SCOPE's rewrites are planned too. The test server's answers fail SCOPE's checks, so passages are
    asked again: the run makes more calls than the uncompressed plan allows, and stays inside this one."""
    from pipelines.plan import estimate_document

    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    seen = _bracket(SUBSET, 1, server, tmp_path, compress="scope", compress_ratio=0.5)
    _assert_bracketed(seen)
    # The first method pays for the rewrites; the second replays them from the journal.
    _, method, estimate, calls, _, _ = seen[0]
    uncompressed = estimate_document(squality_items(SUBSET, 1)[0].document, _config(method, server.base_url))
    assert calls > uncompressed.calls_max, (method, calls, uncompressed)
    assert any("SCOPE may rewrite" in note for note in estimate.notes)


@pytest.mark.slow
@pytest.mark.skipif(not FULL.exists(), reason="../shared/data/squality/dev.jsonl is not here")
def test_preflight_brackets_the_real_tokens_over_the_whole_squality_dev_corpus(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    seen = _bracket(FULL, None, server, tmp_path)
    assert len(seen) == 2 * sum(1 for line in FULL.read_text().splitlines() if line.strip())
    _assert_bracketed(seen)


def test_summarize_chunks_prints_the_preflight_without_calling_the_model(cli_env):
    """An official spec with no API key: the estimate needs no client and makes no call."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "chunks", str(BOOK), "--model", "openai:gpt-4o-mini", "--json"],
        capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    by_method = {e["method"]: e for e in payload["estimates"]}
    hier = by_method["hierarchical"]
    assert hier["chunks"] == payload["chunks"] > 1
    assert hier["calls_min"] == payload["chunks"] + 1  # every chunk, and at least one merge
    assert hier["calls_max"] == 3 * hier["calls_typical"]
    assert 0 < hier["cost_low"] < hier["cost_high"]
    assert hier["input_min"] >= payload["tokens"]  # the chunks are in the prompts


@pytest.mark.slow
@pytest.mark.parametrize("command", [[str(BOOK), "-q"], ["corpus", str(SUBSET), "--method", "hierarchical"]],
                         ids=["summarize", "corpus"])
def test_dry_run_and_max_cost_refusal_start_nothing(server, tmp_path, cli_env, command):
    db = tmp_path / "refused.duckdb"
    env = {**cli_env, "LONGSUM_PRICE_AS": PRICE_AS}
    common = [sys.executable, "-m", "pipelines.cli", *command, "--model", "openai:served", "--base-url",
              server.base_url, "--db", str(db)]
    dry = subprocess.run(common + ["--dry-run"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "estimated cost: $" in dry.stdout and "LLM calls:" in dry.stdout
    refused = subprocess.run(common + ["--max-cost", "0.0001"], capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=300)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "exceeds --max-cost $0.0001" in refused.stderr
    assert not any(r["body"].get("messages") for r in server.requests)  # not one completion asked
    assert not db.exists()


def test_budget_stops_a_running_run_cleanly_and_a_rerun_resumes(server, tmp_path, monkeypatch):
    from pipelines.budget import Budget, BudgetedBackend, BudgetExceeded
    from pipelines.llm.openai_backend import OpenAIBackend
    from pipelines.runner import summarize_document
    from pipelines.store import Store

    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    store = Store(tmp_path / "budget.duckdb")
    story = squality_items(SUBSET, 1)[0].document
    config = _config("hierarchical", server.base_url)
    backend = OpenAIBackend("served", base_url=server.base_url, context_window=32_768)
    budget = Budget(0.0005)
    with pytest.raises(BudgetExceeded):
        summarize_document(story, config, store, backend=BudgetedBackend(backend, budget))
    ((run_id, status, error, cost),) = store.execute("SELECT run_id, status, error, cost_usd FROM runs")
    assert status == "failed" and error.startswith("budget:")
    paid = store.execute("SELECT count(*) FROM llm_calls WHERE run_id = ? AND status = 'ok'", [run_id])[0][0]
    assert paid >= 1 and cost >= 0.0005 and budget.spent_usd == pytest.approx(cost)
    assert not store.execute("SELECT 1 FROM llm_calls WHERE status <> 'ok'")  # no refused call journaled as failed
    asked = len(server.requests)
    result = summarize_document(story, config, store, backend=BudgetedBackend(backend, Budget(1.0)))
    assert result.status == "ok"
    assert result.usage.cache_hits == paid  # everything paid for before is replayed, not bought again
    assert len(server.requests) == asked + result.usage.calls


@pytest.mark.slow
def test_prompt_cache_reads_are_recorded_priced_and_shown(tmp_path, cli_env):
    """OpenAI-style cached_tokens (the test server caches a repeated system
    message) land in llm_calls, lower the cost, and `summarize runs` shows the share."""
    db = tmp_path / "cache.duckdb"
    env = {**cli_env, "LONGSUM_PRICE_AS": PRICE_AS}
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768,
                          prompt_cache_min=1) as fake:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", str(BOOK), "--model", "openai:served", "--base-url",
             fake.base_url, "--db", str(db), "-q", "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    from pipelines.llm.base import Completion
    from pipelines.llm.pricing import cost_usd
    from pipelines.store import Store

    rows = Store(db, read_only=True).execute(
        "SELECT input_tokens, cached_input_tokens, output_tokens, cost_usd FROM llm_calls WHERE NOT cached")
    assert sum(r[1] for r in rows) > 0 and rows[0][1] == 0  # the first call wrote the cache, the others read it
    for inputs, cached, outputs, cost in rows:
        full = cost_usd("openai", "gpt-4o-mini", Completion("", inputs, outputs, "stop", 0.0))
        assert cost == pytest.approx(cost_usd("openai", "gpt-4o-mini",
                                              Completion("", inputs, outputs, "stop", 0.0, cached_input_tokens=cached)))
        assert (cost < full) == (cached > 0)
    shown = subprocess.run([sys.executable, "-m", "pipelines.cli", "runs", "--db", str(db), "--format", "json"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert shown.returncode == 0, shown.stderr
    (run,) = json.loads(shown.stdout)
    share = 100 * sum(r[1] for r in rows) / sum(r[0] for r in rows)
    assert run["cached input %"] == pytest.approx(share, abs=0.06)


def test_a_corpus_budget_stops_every_document_with_reason_budget(server, tmp_path, monkeypatch):
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.store import Store

    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    store = Store(tmp_path / "corpus-budget.duckdb")
    outcomes = evaluate_in_process(squality_items(SUBSET), [_config("hierarchical", server.base_url)], store,
                                   max_cost=0.0005, metrics=[], concurrency=3)
    assert outcomes and all(o.status == "failed" and "budget" in o.error for o in outcomes)
    errors = [e for (e,) in store.execute("SELECT error FROM runs")]
    assert len(errors) == 3 and all(e.startswith("budget:") for e in errors)
    calls = store.execute("SELECT request, cost_usd FROM llm_calls WHERE NOT cached AND status = 'ok'")
    spent = sum(cost for _, cost in calls)
    # One total for all documents: reached, and passed by one request's upper bound at most
    # (a budget per document would spend it once per document).
    most = max(_upper_bound(json.loads(request)) for request, _ in calls)
    assert 0.0005 <= spent <= 0.0005 + most, (spent, most)


def _upper_bound(request: dict) -> float:
    """What a call could have cost at most: its whole prompt and max_tokens."""
    from pipelines.llm.base import MESSAGE_OVERHEAD_TOKENS, Completion
    from pipelines.llm.pricing import cost_usd

    prompt = sum(count_cl100k(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in request["messages"])
    return cost_usd("openai", "gpt-4o-mini", Completion("", prompt, request["max_tokens"], "length", 0.0))
