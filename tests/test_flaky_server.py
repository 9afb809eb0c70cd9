"""A corpus survives a flaky server (issue 28): against the test server
resetting 15 % of connections without an answer and answering 5 % with 503
(chat, /tokenize and the Batch API alike), `summarize corpus`, `summarize
corpus --batch` and the evaluate_corpus flow finish every document, with the
calls and the cost of a clean run. Threads and connections are bounded by
configuration, not by the corpus's size."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Flaky
from peak_rss import PeakThreads

from pipelines.corpus import squality_items
from pipelines.llm.tokenizers import ServerTokenizer, cl100k, count_cl100k

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "squality" / "dev_subset.jsonl"
PRICE_AS = "openai:gpt-4o-mini"
FLAKY = Flaky(reset=0.15, unavailable=0.05, seed=7, first_reset=("/v1/files", "/v1/batches"))


@pytest.fixture()
def server():
    # batch_polls=0: a batch is done when first polled (the waves cost no poll interval)
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768, batch_polls=0) as fake:
        yield fake


def _config(base_url: str) -> dict:
    """One configuration as `summarize corpus --method hierarchical` builds it from its flags below."""
    return {"method": "hierarchical", "model": "openai:served", "concurrency": 4, "base_url": base_url,
            "chunk_size": 1024, "summary_words": 150}


def _journal(db: Path) -> tuple[list[str], int, float, int]:
    """(run statuses, fresh calls, their cost, failed calls) of a corpus database."""
    from pipelines.store import Store

    store = Store(db, read_only=True)
    statuses = [s for (s,) in store.execute("SELECT status FROM runs WHERE method <> 'extractive' ORDER BY doc_id")]
    ((calls, cost, errors),) = store.execute(
        "SELECT count(*) FILTER (WHERE status = 'ok' AND NOT cached), "
        "coalesce(sum(cost_usd) FILTER (WHERE status = 'ok' AND NOT cached), 0), "
        "count(*) FILTER (WHERE status <> 'ok') FROM llm_calls")
    return statuses, calls, cost, errors


def _answered(server, batch: bool) -> int:
    """Completions the server answered: chat requests that got through, or lines of the batches it ran."""
    return len(server.batch_lines) if batch else len(server.requests)


def _clean_run(server, db: Path, batch: bool) -> int:
    """The same corpus and configuration, in process, against the server without faults."""
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    server.flaky = None
    before = _answered(server, batch)
    outcomes = evaluate_in_process(squality_items(SUBSET), [RunConfig(**_config(server.base_url))], Store(db),
                                   batch=batch, metrics=[], concurrency=4, settle_s=0.3, poll_s=0.02)
    assert [o.status for o in outcomes] == ["ok"] * 3
    return _answered(server, batch) - before


def _cli_corpus(server, db: Path, env: dict, batch: bool) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipelines.cli", "corpus", str(SUBSET), "--method", "hierarchical",
               "--model", "openai:served", "--base-url", server.base_url, "--chunk-size", "1024",
               "--summary-words", "150", "--concurrency", "4", "--call-concurrency", "4", "--db", str(db)]
    return subprocess.run(command + (["--batch"] if batch else []), capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["sync", "batch", "flow"])
def test_a_corpus_survives_a_flaky_server(path, server, tmp_path, cli_env, prefect_harness, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("LONGSUM_PRICE_AS", PRICE_AS)
    batch = path == "batch"
    clean_answered = _clean_run(server, tmp_path / "clean.duckdb", batch)
    clean = _journal(tmp_path / "clean.duckdb")

    server.flaky = FLAKY
    ServerTokenizer.forget()  # the flow runs in this process: it counts anew, against the faults
    before = _answered(server, batch)
    db = tmp_path / "flaky.duckdb"
    if path == "flow":
        from flows.evaluate_flow import evaluate_corpus

        evaluate_corpus(source=str(SUBSET), configs=[_config(server.base_url)], metrics=[], db=str(db),
                        concurrency=4, report=str(tmp_path / "report.html"))
    else:  # the CLI, in a process of its own, on this session's Prefect API
        env = {**cli_env, "LONGSUM_PRICE_AS": PRICE_AS, "PREFECT_API_URL": PREFECT_API_URL.value()}
        result = _cli_corpus(server, db, env, batch)
        assert result.returncode == 0, result.stderr[-3000:]
    answered = _answered(server, batch) - before
    statuses, calls, cost, errors = _journal(db)

    faulted = {p for _, p in server.injected}
    if batch:  # uploads, batch creations, polls and downloads: whichever the draw hit
        assert any(p.startswith(("/v1/files", "/v1/batches")) for p in faulted), faulted
    else:
        assert "/tokenize" in faulted and "/v1/chat/completions" in faulted, faulted
    assert len(server.injected) >= 10
    assert statuses == clean[0] == ["ok"] * 3  # every document finished
    assert clean_answered <= answered <= 1.2 * clean_answered
    assert (calls, errors) == (clean[1], 0) == (clean_answered, 0)  # each retried call journaled once
    assert cost == pytest.approx(clean[2]) and cost > 0


@pytest.mark.slow
def test_a_document_that_fails_after_retries_says_why_and_the_others_complete(tmp_path):
    """One configuration's server resets every connection: its run fails with
    the transport error, the attempts and the time they took; the other
    configuration's run of the same document completes (the harness's rule)."""
    from pipelines.evaluate import evaluate
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True) as good, \
            FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, flaky=Flaky(reset=1.0, unavailable=0.0)) as bad:
        configs = [RunConfig(method="hierarchical", model="openai:served", base_url=url, chunk_size=1024,
                             summary_words=150, max_retries=2) for url in (bad.base_url, good.base_url)]
        store = Store(tmp_path / "mixed.duckdb")
        outcomes = evaluate(squality_items(SUBSET, 1), configs, store, concurrency=2)
    assert [o.status for o in outcomes] == ["failed", "ok"]
    error = outcomes[0].error
    assert "lost the connection to http://127.0.0.1:" in error and "(3 attempts over " in error, error
    ((stored,),) = store.execute("SELECT error FROM runs WHERE status = 'failed'")
    assert "(3 attempts over " in stored


def small_corpus(folder: Path, n: int) -> Path:
    """n documents of four paragraphs (four chunks at chunk size 64: as many steps as calls allowed, and more)."""
    folder.mkdir()
    for i in range(n):
        paragraphs = [f"Story {i}, part {p}. " + " ".join(f"word{w}" for w in range(30)) + "." for p in range(4)]
        (folder / f"doc{i:03d}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return folder


def run_corpus(server, folder: Path, db: Path, *, batch: bool, concurrency: int = 3, calls: int = 3):
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.corpus import load_corpus
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    config = RunConfig(method="hierarchical", model="openai:served", base_url=server.base_url, chunk_size=64,
                       summary_words=10, concurrency=calls)
    server.max_in_flight = server.max_open_connections = 0
    # The test server's thread per open connection is not longsum's: its connections are bounded below.
    with PeakThreads(others=lambda: server.open_connections) as threads:
        outcomes = evaluate_in_process(load_corpus(str(folder)), [config], Store(db), batch=batch, metrics=[],
                                       concurrency=concurrency, settle_s=0.05, poll_s=0.01)
    assert {o.status for o in outcomes} == {"ok"}
    return threads.peak, server.max_open_connections, server.max_in_flight


@pytest.mark.slow
@pytest.mark.parametrize("batch", [False, True], ids=["sync", "batch"])
def test_threads_and_connections_are_bounded_by_configuration_not_corpus_size(tmp_path, batch):
    """3 documents x 3 calls at once: the same bound on 4 and on 12 documents
    (batch mode used to start a thread per document and 256 per document's steps)."""
    encode = cl100k().encode  # the server's tokenizer runs here: no /tokenize request but the probe
    # Counted before the runs: an earlier test's server may still hold a thread per kept-alive
    # connection, which ends during this test (counted after, it made the bound flaky).
    base = threading.active_count()
    with FakeOpenAIServer(delay=0.01, batch_polls=0, count_tokens=count_cl100k, tokenize=True, encode=encode) as server:
        small = run_corpus(server, small_corpus(tmp_path / "small", 4), tmp_path / "small.duckdb", batch=batch)
        large = run_corpus(server, small_corpus(tmp_path / "large", 12), tmp_path / "large.duckdb", batch=batch)
    # Documents, their steps, and a few for the collector, pollers, the pool and the store's reaper of
    # idle connections (pipelines/store/lingering.py). The test server's threads are left out: while each
    # store write opened the file, the documents took turns on it and had 2 calls in flight at most (3
    # connections); with a connection kept for each run they reach the 9 allowed.
    bound = base + 3 + 3 * 3 + 8
    for peak, connections, in_flight in (small, large):
        assert peak <= bound, (small, large)
        assert in_flight <= 3 * 3 and connections <= 3 * 3 + 2, (small, large)
    assert large[0] <= small[0] + 2, (small, large)
