"""Batch mode against the test server's Batch API (files + batches endpoints
as the OpenAI SDK calls them): waves across documents, the journal, half
price, cached requests never submitted, an expired batch, a crashed flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer
from pipelines.corpus import squality_items
from pipelines.llm.tokenizers import count_cl100k

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "squality" / "dev_subset.jsonl"
PRICE_AS = "openai:gpt-4o-mini"
FAST = {"settle_s": 0.3, "poll_s": 0.02}
# Calls at once per document (--call-concurrency): a wave of batch mode holds at most
# documents x this many requests, enough here for every story's chunk summaries at once.
WIDTH = 16


@pytest.fixture()
def server():
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768) as fake:
        yield fake


def _configs(base_url: str, methods=("hierarchical",)):
    from pipelines.runner import RunConfig

    return [RunConfig(method=m, model="openai:served", base_url=base_url, context_window=32_768, chunk_size=1024,
                      summary_words=150, concurrency=WIDTH) for m in methods]


def _evaluate(db: Path, base_url: str, *, batch: bool, methods=("hierarchical",), limit=None):
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.store import Store

    store = Store(db)
    outcomes = evaluate_in_process(squality_items(SUBSET, limit), _configs(base_url, methods), store, batch=batch,
                                   metrics=[], concurrency=3, **FAST)
    return store, outcomes


def _flow_config(base_url: str) -> dict:
    """The first of _configs as the evaluate_corpus flow takes it."""
    return {"method": "hierarchical", "model": "openai:served", "base_url": base_url, "context_window": 32_768,
            "chunk_size": 1024, "summary_words": 150, "concurrency": WIDTH}


def _finals(store) -> dict[str, str]:
    rows = store.execute("SELECT r.doc_id, r.method, s.text FROM runs r JOIN summaries s ON s.run_id = r.run_id AND s.is_final")
    return {(doc, method): text for doc, method, text in rows}


@pytest.mark.slow
def test_a_batched_corpus_gives_the_same_summaries_at_half_the_cost(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    sync_store, sync = _evaluate(tmp_path / "sync.duckdb", server.base_url, batch=False,
                                 methods=("hierarchical", "incremental"))
    sync_requests = len(server.requests)
    batch_store, batched = _evaluate(tmp_path / "batch.duckdb", server.base_url, batch=True,
                                     methods=("hierarchical", "incremental"))
    assert [o.status for o in batched] == [o.status for o in sync] == ["ok"] * 6
    assert len(server.requests) == sync_requests  # not one synchronous call in batch mode
    assert _finals(batch_store) == _finals(sync_store)

    calls = batch_store.execute("SELECT batch_id, cost_usd, request_hash FROM llm_calls WHERE NOT cached")
    assert calls and all(batch_id for batch_id, _, _ in calls)
    sync_cost = dict(sync_store.execute("SELECT request_hash, cost_usd FROM llm_calls WHERE NOT cached"))
    for _, cost, request_hash in calls:
        assert cost == pytest.approx(sync_cost[request_hash] / 2)
    # Every answer came from a batch the journal knows, each request sent once.
    batches = batch_store.execute("SELECT batch_id, n_requests, status FROM llm_batches ORDER BY created_at")
    assert {status for _, _, status in batches} == {"completed"}
    assert {b for b, _, _ in calls} == {b for b, _, _ in batches}
    assert sum(n for _, n, _ in batches) == len(server.batch_lines) == len(calls)


@pytest.mark.slow
def test_requests_already_answered_are_never_submitted(server, tmp_path):
    db = tmp_path / "again.duckdb"
    _evaluate(db, server.base_url, batch=True, limit=2)
    lines = len(server.batch_lines)
    store, outcomes = _evaluate(db, server.base_url, batch=True, limit=2)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert len(server.batch_lines) == lines and not server.requests
    # Adding a third story submits only its requests.
    _evaluate(db, server.base_url, batch=True, limit=3)
    new = server.batch_lines[lines:]
    assert new and not {l["custom_id"] for l in new} & {l["custom_id"] for l in server.batch_lines[:lines]}


@pytest.mark.slow
def test_an_expired_batch_resubmits_its_unfinished_requests_and_nothing_else(server, tmp_path):
    server.expire_next_batch = 4
    store, outcomes = _evaluate(tmp_path / "expired.duckdb", server.base_url, batch=True)
    assert [o.status for o in outcomes] == ["ok"] * 3
    (first_id, first_n, status, succeeded, unfinished), *later = store.execute(
        "SELECT batch_id, n_requests, status, n_succeeded, n_unfinished FROM llm_batches ORDER BY created_at")
    assert later and {row[2] for row in later} == {"completed"}
    assert status == "expired" and succeeded == 4 and unfinished == first_n - 4
    _assert_only_unfinished_sent_again([l["custom_id"] for l in server.batch_lines[:first_n]], 4,
                                       [l["custom_id"] for l in server.batch_lines], store, first_id)


def _assert_only_unfinished_sent_again(first: list[str], finished: int, sent_ids: list[str], store, first_id: str):
    """The first batch's requests after its first `finished` were sent once more, and nothing else was;
    its answers are journaled with its id."""
    sent = Counter(sent_ids)
    twice = {key for key, n in sent.items() if n > 1}
    assert twice == set(first[finished:])
    assert all(sent[key] == 2 for key in twice)
    assert store.execute("SELECT count(*) FROM llm_calls WHERE batch_id = ?", [first_id])[0][0] == finished


# A flow run in a process of its own (on the session's Prefect API), killed while its batches are out.
CRASHING_FLOW = """
import json, sys
from flows.evaluate_flow import evaluate_corpus
evaluate_corpus(source=sys.argv[3], configs=[json.loads(sys.argv[2])], metrics=[], db=sys.argv[1], batch=True)
"""


@pytest.mark.slow
def test_a_crashed_flow_resumes_against_its_pending_batch(server, tmp_path, cli_env, prefect_harness, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    from pipelines.llm.openai_backend import OpenAIBackend
    from pipelines.plan import estimate_document

    # Once let go, a batch is done when first polled: the resumed flow waits on the batches, not on the
    # flow's 10 s poll interval a wave (the tests above poll batches still in progress, at a short interval)
    monkeypatch.setattr(server, "batch_polls", 0)

    backend = OpenAIBackend("served", base_url=server.base_url, context_window=32_768)
    stories = squality_items(SUBSET)
    first_wave = sum(estimate_document(s.document, _configs(server.base_url)[0], backend).chunks for s in stories)
    db = tmp_path / "crash.duckdb"
    server.hold_batches.set()  # the provider is slow: batches stay in progress
    process = subprocess.Popen([sys.executable, "-c", CRASHING_FLOW, str(db),
                                json.dumps(_flow_config(server.base_url)), str(SUBSET)],
                               cwd=ROOT, env={**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value()},
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # Every story's chunk summaries are out (in one batch or a few), and journaled.
        while time.monotonic() < deadline and process.poll() is None and not (
                len(server.batch_lines) == first_wave and db.exists() and _journaled(db) == len(server.batches)):
            time.sleep(0.2)
        assert len(server.batch_lines) == first_wave, "the first wave never went out"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    pending = list(server.batches)
    sent_before = [l["custom_id"] for l in server.batch_lines]

    server.hold_batches.clear()
    from flows.evaluate_flow import evaluate_corpus
    from pipelines.store import Store

    table = evaluate_corpus(source=str(SUBSET), configs=[_flow_config(server.base_url)], metrics=[], db=str(db),
                            batch=True, report=str(tmp_path / "report.html"))
    assert [row["ok"] for row in table] == [3]
    store = Store(db, read_only=True)
    sent = Counter(l["custom_id"] for l in server.batch_lines)
    assert all(sent[key] == 1 for key in sent_before)  # waited on, never sent again
    for batch_id in pending:
        assert store.execute("SELECT status FROM llm_batches WHERE batch_id = ?", [batch_id]) == [("completed",)]
    answered = store.execute("SELECT count(*) FROM llm_calls WHERE list_contains(?, batch_id)", [pending])[0][0]
    assert answered == first_wave
    crashed = store.execute("SELECT status, error FROM runs WHERE status <> 'ok'")
    assert crashed and all(status == "interrupted" and "interrupted" in error for status, error in crashed)


def _journaled(db: Path) -> int:
    from pipelines.store import Store, StoreError

    try:
        return Store(db, timeout_s=0, read_only=True).execute("SELECT count(*) FROM llm_batches")[0][0]
    except StoreError:
        return -1


@pytest.mark.slow
def test_the_corpus_flow_in_batch_mode(server, tmp_path, prefect_harness, monkeypatch):
    """evaluate_corpus(batch=True): the flow runs the documents in its process
    through the collector; every answer came from a batch, at half price."""
    from flows.evaluate_flow import evaluate_corpus
    from pipelines.store import Store

    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    monkeypatch.setattr(server, "batch_polls", 0)  # done when first polled: no 10 s poll interval a wave
    db = tmp_path / "flow.duckdb"
    table = evaluate_corpus(source=str(SUBSET), configs=[_flow_config(server.base_url)], metrics=[], db=str(db),
                            batch=True, report=str(tmp_path / "report.html"))
    assert [row["ok"] for row in table] == [3]
    store = Store(db, read_only=True)
    ((calls, batched, batches),) = store.execute(
        "SELECT count(*), count(batch_id), (SELECT count(*) FROM llm_batches) FROM llm_calls WHERE NOT cached")
    assert calls == batched == len(server.batch_lines) and 0 < batches < calls
    assert not server.requests  # no synchronous completion


ANTHROPIC_KEY = "sk-ant-test-key-that-must-stay-out-of-the-db-7"


def _anthropic_configs(base_url: str):
    from pipelines.runner import RunConfig

    return [RunConfig(method=m, model="anthropic:claude-3-5-haiku-latest", base_url=base_url, context_window=32_768,
                      chunk_size=1024, summary_words=150, concurrency=WIDTH) for m in ("hierarchical", "incremental")]


def _evaluate_anthropic(db: Path, base_url: str, *, batch: bool, limit=None, settle_s=FAST["settle_s"]):
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.store import Store

    store = Store(db)
    outcomes = evaluate_in_process(squality_items(SUBSET, limit), _anthropic_configs(base_url), store, batch=batch,
                                   metrics=[], concurrency=3, **{**FAST, "settle_s": settle_s})
    return store, outcomes


@pytest.mark.slow
def test_anthropic_message_batches_give_the_same_summaries_at_half_the_cost(tmp_path, monkeypatch):
    """Message Batches through the official SDK against a local server that
    speaks Anthropic's API: the same summaries as synchronous calls, each
    answer journaled with its batch at half the price, and the key sent but
    never stored."""
    from fake_anthropic_server import FakeAnthropicServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("LONGSUM_PRICE_AS", "anthropic:claude-3-5-haiku-latest")
    with FakeAnthropicServer() as fake:
        sync_store, sync = _evaluate_anthropic(tmp_path / "sync.duckdb", fake.base_url, batch=False)
        synchronous = len(fake.messages)
        batch_store, batched = _evaluate_anthropic(tmp_path / "batch.duckdb", fake.base_url, batch=True)
        assert [o.status for o in batched] == [o.status for o in sync] == ["ok"] * 6
        assert len(fake.messages) == synchronous  # not one synchronous call in batch mode
        assert len(fake.batch_requests) == synchronous and 0 < len(fake.batches) < synchronous
        assert _finals(batch_store) == _finals(sync_store)

        calls = batch_store.execute("SELECT batch_id, cost_usd, request_hash FROM llm_calls WHERE NOT cached")
        assert len(calls) == synchronous and all(batch_id in fake.batches for batch_id, _, _ in calls)
        sync_cost = dict(sync_store.execute("SELECT request_hash, cost_usd FROM llm_calls WHERE NOT cached"))
        assert all(cost > 0 and cost == pytest.approx(sync_cost[request_hash] / 2) for _, cost, request_hash in calls)
        journaled = batch_store.execute("SELECT batch_id, provider, n_requests, n_succeeded FROM llm_batches")
        assert {(b, p) for b, p, _, _ in journaled} == {(b, "anthropic") for b in fake.batches}
        assert all(n == ok for _, _, n, ok in journaled)

        params = [item["params"] for item in fake.batch_requests]
        assert all(p["model"] == "claude-3-5-haiku-latest" for p in params)
        assert all(ANTHROPIC_KEY in h.get("x-api-key", "") + h.get("authorization", "") for h in fake.headers)
        for store in (sync_store, batch_store):
            assert ANTHROPIC_KEY not in json.dumps(store.execute("SELECT * FROM llm_calls"), default=str)
            assert ANTHROPIC_KEY not in json.dumps(store.execute("SELECT * FROM runs"), default=str)


@pytest.mark.slow
def test_an_expired_anthropic_batch_resubmits_its_unfinished_requests_and_nothing_else(tmp_path, monkeypatch):
    """A message batch that ends with some requests `expired`: those, and only
    those, go out again in a later batch; the corpus completes."""
    from fake_anthropic_server import FakeAnthropicServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    with FakeAnthropicServer() as fake:
        fake.expire_next_batch = 4
        # The first wave must be whole: a wave goes out once every document waits, and settle_s is only
        # the fallback (at 0.3 s a loaded CI machine sent a first wave of one request).
        store, outcomes = _evaluate_anthropic(tmp_path / "expired.duckdb", fake.base_url, batch=True, settle_s=5.0)
    assert [o.status for o in outcomes] == ["ok"] * 6
    first_id = next(iter(fake.batches))
    first = [item["custom_id"] for item in fake.batches[first_id]["requests"]]
    assert len(first) > 4
    assert store.execute("SELECT n_succeeded, n_unfinished FROM llm_batches WHERE batch_id = ?",
                         [first_id]) == [(4, len(first) - 4)]
    _assert_only_unfinished_sent_again(first, 4, [item["custom_id"] for item in fake.batch_requests], store, first_id)


def test_an_errored_anthropic_batch_request_is_the_callers_error(tmp_path, monkeypatch):
    """A request the batch answers `errored` fails the caller that asked it
    with the provider's message (the summarizer's own retries then decide),
    while the other requests of that batch are answered; the prompt-cache
    mark on the shared system prompt travels in the batched params."""
    from fake_anthropic_server import FakeAnthropicServer
    from pipelines.llm import LLMCallError
    from pipelines.llm.anthropic_backend import AnthropicBackend
    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.batch import BatchingBackend, MemoryBatchJournal

    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    with FakeAnthropicServer() as fake:
        fake.error_next = 1
        journal = MemoryBatchJournal()
        collector = BatchingBackend(AnthropicBackend("claude-3-5-haiku-latest", base_url=fake.base_url), journal,
                                    **FAST)
        collector.expect(3)
        system = {"role": "system", "content": "You summarize stories."}
        requests = [CompletionRequest(messages=(system, {"role": "user", "content": f"<excerpt>\nStory number {n} "
                                                         "begins here and goes on.\n</excerpt>\nSummarize in at most "
                                                         "20 words."}), max_tokens=40, cache_prefix_messages=1)
                    for n in range(3)]
        results = [None] * 3

        def ask(n: int) -> None:
            participant = collector.participant()
            try:
                results[n] = participant.complete(requests[n])
            except LLMCallError as exc:
                results[n] = exc
            finally:
                participant.release()

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        collector.close()
    assert len(fake.batches) == 1 and len(fake.batch_requests) == 3 and not fake.messages
    assert all(item["params"]["system"] == [{"type": "text", "text": "You summarize stories.",
                                             "cache_control": {"type": "ephemeral"}}] for item in fake.batch_requests)
    errored = [r for r in results if isinstance(r, LLMCallError)]
    assert len(errored) == 1 and "max_tokens: too large" in str(errored[0]) and ANTHROPIC_KEY not in str(errored[0])
    answered = [r for r in results if not isinstance(r, LLMCallError)]
    assert len(answered) == 2 and all(r.text.startswith("Story number") and r.batch_id for r in answered)
