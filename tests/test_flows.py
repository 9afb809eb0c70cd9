"""Prefect flows under one `prefect_test_harness` per session: the real
llama.cpp backend for workflows, a small OpenAI-compatible test server where
only orchestration (concurrency) is under test, and a Dask LocalCluster."""

import json
from pathlib import Path

import pytest
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer

from pipelines.store import Store

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module", autouse=True)
def harness(prefect_harness):
    yield


@pytest.fixture(scope="module")
def small_story(tmp_path_factory, scandal_text) -> Path:
    path = tmp_path_factory.mktemp("flows") / "scandal_start.txt"
    path.write_text(excerpt(scandal_text, 700), encoding="utf-8")
    return path


SMALL = dict(chunk_size=240, summary_words=50, context_window=1024)


def test_hierarchical_flow_persists_and_links_the_run(small_story, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.summarize_flow import summarize_document

    db = tmp_path / "flow.duckdb"
    result = summarize_document(path=str(small_story), db=str(db), **SMALL)
    assert result["status"] in ("ok", "degraded") and result["n_chunks"] >= 3
    store = Store(db)
    ((status, params, calls, n_summaries),) = store.execute(
        "SELECT status, params, llm_calls, n_summaries FROM runs WHERE run_id = ?", [result["run_id"]])
    assert status == result["status"] and calls == result["usage"]["calls"] > result["n_chunks"] - 1
    assert '"prefect_flow_run_id"' in params
    assert store.execute("SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached", [result["run_id"]])[0][0] == calls
    levels = store.execute("SELECT DISTINCT level FROM summaries WHERE run_id = ? ORDER BY 1", [result["run_id"]])
    assert [lvl for (lvl,) in levels][:2] == [0, 1]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert any(a.key == "longsum-run" and result["run_id"] in (a.data or "") for a in artifacts)

    # Re-running replays every finished step: no LLM call is made again.
    again = summarize_document(path=str(small_story), db=str(db), **SMALL)
    assert again["usage"]["calls"] == 0 and again["usage"]["cache_hits"] == calls
    assert again["summary"] == result["summary"]


def test_flow_crash_then_rerun_repeats_no_finished_call(small_story, tmp_path, monkeypatch):
    from flows.summarize_flow import summarize_document
    from pipelines.summarize.hierarchical import HierarchicalSummarizer

    db = tmp_path / "crash.duckdb"
    real_merge = HierarchicalSummarizer.merge

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(HierarchicalSummarizer, "merge", crash)
    params = dict(path=str(small_story), db=str(db), chunk_size=200, summary_words=45, context_window=1024)
    with pytest.raises(Exception):
        summarize_document(**params)
    store = Store(db)
    ((status, error, made),) = store.execute("SELECT status, error, llm_calls FROM runs")
    assert status == "failed" and "worker lost" in error and made >= 3  # the chunk summaries' calls were kept

    monkeypatch.setattr(HierarchicalSummarizer, "merge", real_merge)
    result = summarize_document(**params)
    assert result["status"] in ("ok", "degraded")
    repeated = store.execute(
        "SELECT request_hash FROM llm_calls WHERE status = 'ok' AND NOT cached GROUP BY 1 HAVING count(*) > 1")
    assert repeated == []
    steps = [s for (s,) in store.execute("SELECT step FROM llm_calls WHERE run_id = ? AND NOT cached", [result["run_id"]])]
    assert steps and all(s.startswith("merge:") for s in steps)


def test_incremental_flow_is_sequential(small_story, tmp_path):
    from flows.summarize_flow import summarize_document

    db = tmp_path / "inc.duckdb"
    result = summarize_document(path=str(small_story), db=str(db), method="incremental", **SMALL)
    store = Store(db)
    kinds = store.execute("SELECT kind, idx FROM summaries WHERE run_id = ? AND kind = 'update' ORDER BY idx", [result["run_id"]])
    assert [idx for _, idx in kinds] == list(range(result["n_chunks"]))
    times = [t for (t,) in store.execute("SELECT created_at FROM llm_calls WHERE run_id = ? ORDER BY step", [result["run_id"]])]
    assert len(times) >= result["n_chunks"]


def test_chunk_level_concurrency_is_bounded(small_story, tmp_path):
    """Against an OpenAI-compatible server that answers after a delay."""
    from flows.summarize_flow import summarize_document

    with FakeOpenAIServer(delay=0.4) as server:
        result = summarize_document(
            path=str(small_story), db=str(tmp_path / "api.duckdb"), model="openai:fake", base_url=server.base_url,
            chunk_size=120, summary_words=40, context_window=2048, concurrency=2,
        )
    assert result["n_chunks"] >= 6
    assert server.max_in_flight == 2  # concurrent, and never more than the limit


def test_two_flows_share_the_global_limit(small_story, tmp_path):
    """Each flow runs 2 chunk summaries at once, but the API's global limit (2) bounds both together."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.summarize_flow import summarize_document

    with FakeOpenAIServer(delay=0.4) as server:
        def one(name):
            return summarize_document(
                path=str(small_story), db=str(tmp_path / f"{name}.duckdb"), model="openai:fake",
                base_url=server.base_url, chunk_size=120, summary_words=40, context_window=2048, concurrency=2,
                resume=False,
            )

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(one, ["first", "second"]))
    assert all(r["status"] in ("ok", "degraded") and r["n_chunks"] >= 6 for r in results)
    assert len(server.requests) == sum(r["usage"]["calls"] for r in results)
    assert server.max_in_flight == 2


def test_a_flow_holds_no_more_slots_than_the_limit_allows():
    from prefect.client.orchestration import get_client

    from flows.summarize_flow import _api_slots

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name("longsum-test-limit", 1)
    with _api_slots("longsum-test-limit", 3) as held:
        assert held == 1
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name("longsum-test-limit").active_slots == 1
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("longsum-test-limit").active_slots == 0
    with _api_slots(None, 3) as held:
        assert held == 3


def test_tasks_reuse_one_api_client_per_configuration(monkeypatch):
    from flows.tasks import _backend
    from pipelines.runner import RunConfig

    config = RunConfig(model="openai:fake", base_url="http://127.0.0.1:9/v1", context_window=2048)
    monkeypatch.setenv("OPENAI_API_KEY", "first-key")
    first = _backend(config)
    assert _backend(RunConfig(model="openai:fake", base_url="http://127.0.0.1:9/v1", context_window=2048)) is first
    assert _backend(RunConfig(model="openai:other", base_url="http://127.0.0.1:9/v1", context_window=2048)) is not first
    monkeypatch.setenv("OPENAI_API_KEY", "second-key")
    assert _backend(config) is not first  # a new key, a new client


def test_evaluate_corpus_on_dask_matches_thread_runner(tmp_path, scandal_text, books):
    from dask.distributed import LocalCluster

    from flows.corpus import evaluate_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "scandal.txt").write_text(excerpt(scandal_text, 300), encoding="utf-8")
    league = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    (corpus / "league.txt").write_text(excerpt(league, 300), encoding="utf-8")
    (corpus / "league.ref1.txt").write_text(excerpt(league, 80), encoding="utf-8")
    configs = [{"method": "hierarchical", **SMALL}, {"method": "extractive", "summary_words": 40}]

    threads_db = tmp_path / "threads.duckdb"
    threads = evaluate_corpus(source=str(corpus), configs=configs, db=str(threads_db), resume=False,
                              export_dir=str(tmp_path / "parquet"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_db = tmp_path / "dask.duckdb"
        on_dask = evaluate_corpus(source=str(corpus), configs=configs, db=str(dask_db), dask_address=cluster.scheduler_address,
                                  resume=False)

    def summaries(db):
        return sorted(Store(db).execute(
            "SELECT d.title, r.method, r.final_summary, r.n_chunks FROM runs r JOIN documents d USING (doc_id)"))

    assert summaries(threads_db) == summaries(dask_db)
    assert len(summaries(dask_db)) == 4
    assert [row["configuration"] for row in threads] == [row["configuration"] for row in on_dask]
    assert all(row["finished"] == 2 for row in on_dask)
    # the document with a reference got ROUGE scores, in the table and in the store
    assert any(row.get("rouge1_f") is not None for row in threads)
    # the Parquet export reads back with a glob
    import duckdb

    exported = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/parquet/*/runs.parquet')").fetchall()[0][0]
    assert exported == 4


def test_flow_compresses_chunks_and_records_the_saving(small_story, tmp_path):
    """--compress in the flow: each chunk through SCOPE in its own task (an
    OpenAI-compatible server rewrites), rows in compressed_chunks, the saving on the run."""
    from flows.summarize_flow import summarize_document

    db = tmp_path / "compress.duckdb"
    with FakeOpenAIServer() as server:
        result = summarize_document(path=str(small_story), db=str(db), model="openai:fake", base_url=server.base_url,
                                    compress="scope", compress_ratio=0.5, compress_query="Who is Irene Adler?",
                                    **SMALL)
    store = Store(db)
    rows = store.execute("SELECT idx, method, original_tokens, compressed_tokens FROM compressed_chunks "
                         "WHERE run_id = ? ORDER BY idx", [result["run_id"]])
    assert [r[0] for r in rows] == list(range(result["n_chunks"])) and {r[1] for r in rows} == {"scope"}
    ((method, before, after),) = store.execute(
        "SELECT compression, tokens_before_compression, tokens_after_compression FROM runs WHERE run_id = ?",
        [result["run_id"]])
    assert method == "scope" and before == sum(r[2] for r in rows) and after == sum(r[3] for r in rows)
    assert abs(after / before - 0.5) <= 0.05
    compress_steps = store.execute("SELECT count(*) FROM llm_calls WHERE run_id = ? AND step LIKE 'compress:%'",
                                   [result["run_id"]])[0][0]
    assert compress_steps > 0
    # The chunk summaries were written from the compressed chunks.
    for idx, text in store.execute("SELECT idx, text FROM compressed_chunks WHERE run_id = ?", [result["run_id"]]):
        (request,) = store.execute("SELECT request FROM llm_calls WHERE run_id = ? AND step LIKE ?",
                                   [result["run_id"], f"chunk:{idx}#%"])[0]
        assert text.strip()[:60] in json.loads(request)["messages"][-1]["content"]
