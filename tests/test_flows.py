"""Prefect flows under one `prefect_test_harness` per session: the library's
workflows run with each step a Prefect task (the real llama.cpp backend, and
the real OpenAI client against a small OpenAI-compatible test server where
orchestration is under test), a corpus fanned out across Dask workers that
share no files with the flow."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer, concise_answer

from pipelines.runner import RunConfig, summarize_file
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
API = dict(model="openai:fake", chunk_size=120, summary_words=40, context_window=2048)
SUMMARY_COLUMNS = ("level, idx, kind, text, n_words, n_tokens, token_limit, word_limit, attempts, degraded, salvaged, "
                   "note, first_chunk, last_chunk, request_hash, is_final")


def summaries(db: Path, run_id: str) -> list[tuple]:
    return Store(db).execute(f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE run_id = ? ORDER BY level, idx, kind",
                             [run_id])


@pytest.mark.parametrize("method, compress", [("hierarchical", "none"), ("incremental", "none"),
                                              ("hierarchical", "scope")])
def test_cli_and_flow_write_the_same_summaries(small_story, tmp_path, method, compress):
    """One workflow, two executors: threads in-process (the CLI) and Prefect
    tasks (the flow), each with its own database so that no answer is shared;
    with compression, the same compressed chunks too."""
    from flows.summarize_flow import summarize_document_flow

    with FakeOpenAIServer() as server:
        settings = dict(method=method, compress=compress, base_url=server.base_url, concurrency=3, **API)
        library = summarize_file(small_story, RunConfig(**settings), Store(tmp_path / "cli.duckdb"))
        flow = summarize_document_flow(path=str(small_story), db=str(tmp_path / "flow.duckdb"), **settings)
    assert library.n_chunks >= 6 and flow["n_chunks"] == library.n_chunks
    assert flow["summary"] == library.summary
    in_library = summaries(tmp_path / "cli.duckdb", library.run_id)
    assert len(in_library) > library.n_chunks
    assert summaries(tmp_path / "flow.duckdb", flow["run_id"]) == in_library
    assert flow["usage"]["calls"] == library.usage.calls > library.n_chunks
    compressed = [Store(db).execute("SELECT idx, method, original_tokens, compressed_tokens, fallbacks, text "
                                    "FROM compressed_chunks WHERE run_id = ? ORDER BY idx", [run_id])
                  for db, run_id in ((tmp_path / "cli.duckdb", library.run_id),
                                     (tmp_path / "flow.duckdb", flow["run_id"]))]
    assert compressed[0] == compressed[1] and len(compressed[0]) == (library.n_chunks if compress != "none" else 0)


def test_flow_on_the_embedded_model_persists_links_and_replays(small_story, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.summarize_flow import summarize_document_flow

    db = tmp_path / "flow.duckdb"
    result = summarize_document_flow(path=str(small_story), db=str(db), **SMALL)
    assert result["status"] in ("ok", "degraded") and result["n_chunks"] >= 3
    store = Store(db)
    ((status, params, calls, n_summaries),) = store.execute(
        "SELECT status, params, llm_calls, n_summaries FROM runs WHERE run_id = ?", [result["run_id"]])
    assert status == result["status"] and calls == result["usage"]["calls"] > result["n_chunks"] - 1
    assert '"prefect_flow_run_id"' in params
    assert store.execute("SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached", [result["run_id"]])[0][0] == calls
    levels = store.execute("SELECT DISTINCT level FROM summaries WHERE run_id = ? ORDER BY 1", [result["run_id"]])
    assert [lvl for (lvl,) in levels][:2] == [0, 1]
    # The embedded model serves one call at a time: whatever the flow's concurrency, its chunk steps ran one
    # after another, each step's attempts together (so a retry reuses its prompt in the KV cache).
    steps = [step.split("#")[0] for (step,) in store.execute(
        "SELECT step FROM llm_calls WHERE run_id = ? ORDER BY created_at", [result["run_id"]])]
    chunk_steps = [s for s in steps if s.startswith("chunk:")]
    assert chunk_steps == sorted(chunk_steps, key=lambda s: int(s.split(":")[1]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert any(a.key == "longsum-run" and result["run_id"] in (a.data or "") for a in artifacts)
    # The flow wrote nothing beside its database (no snapshot, no result files).
    assert {p.name for p in tmp_path.iterdir()} <= {"flow.duckdb", "flow.duckdb.wal"}

    # Re-running replays every finished call from the journal: none is made again.
    again = summarize_document_flow(path=str(small_story), db=str(db), **SMALL)
    assert again["usage"]["calls"] == 0 and again["usage"]["cache_hits"] == calls
    assert again["summary"] == result["summary"]


def test_flow_crash_then_rerun_repeats_no_finished_call(small_story, tmp_path, monkeypatch):
    from flows.summarize_flow import summarize_document_flow
    from pipelines.summarize.hierarchical import HierarchicalSummarizer

    db = tmp_path / "crash.duckdb"
    real_merge = HierarchicalSummarizer.merge

    def merge(*args, **kwargs):  # the step's name is the method's: keep it
        raise RuntimeError("worker lost")

    monkeypatch.setattr(HierarchicalSummarizer, "merge", merge)
    params = dict(path=str(small_story), db=str(db), chunk_size=200, summary_words=45, context_window=1024)
    with pytest.raises(Exception):
        summarize_document_flow(**params)
    store = Store(db)
    ((status, error, made),) = store.execute("SELECT status, error, llm_calls FROM runs")
    assert status == "failed" and "worker lost" in error and made >= 3  # the chunk summaries' calls were kept

    monkeypatch.setattr(HierarchicalSummarizer, "merge", real_merge)
    result = summarize_document_flow(**params)
    assert result["status"] in ("ok", "degraded")
    repeated = store.execute(
        "SELECT request_hash FROM llm_calls WHERE status = 'ok' AND NOT cached GROUP BY 1 HAVING count(*) > 1")
    assert repeated == []
    steps = [s for (s,) in store.execute("SELECT step FROM llm_calls WHERE run_id = ? AND NOT cached", [result["run_id"]])]
    assert steps and all(s.startswith("merge:") for s in steps)


def test_incremental_updates_run_one_after_another(small_story, tmp_path):
    """Each update starts only after the one before returned, in chunk order."""
    from flows.summarize_flow import summarize_document_flow

    with FakeOpenAIServer(delay=0.2, answer=concise_answer) as server:
        result = summarize_document_flow(path=str(small_story), db=str(tmp_path / "inc.duckdb"), method="incremental",
                                    base_url=server.base_url, concurrency=4, **API)
    assert server.max_in_flight == 1
    calls = Store(tmp_path / "inc.duckdb").execute(
        "SELECT step, epoch(created_at) - latency_s AS started, epoch(created_at) AS ended FROM llm_calls "
        "WHERE run_id = ? AND step LIKE 'update:%' ORDER BY ended", [result["run_id"]])
    order = [int(step.split(":")[1].split("#")[0]) for step, _, _ in calls]
    assert order == sorted(order) and set(order) == set(range(result["n_chunks"]))
    for (_, _, ended), (_, started, _) in zip(calls, calls[1:]):
        assert started >= ended - 0.05  # no overlap (timestamps are taken on either side of the call)


def test_chunk_level_concurrency_is_bounded(small_story, tmp_path):
    from flows.summarize_flow import summarize_document_flow

    with FakeOpenAIServer(delay=0.4, answer=concise_answer) as server:
        result = summarize_document_flow(path=str(small_story), db=str(tmp_path / "api.duckdb"), base_url=server.base_url,
                                    concurrency=2, **API)
    assert result["n_chunks"] >= 6
    assert server.max_in_flight == 2  # concurrent, and never more than asked


def test_flows_occupy_the_configured_limit_and_never_change_it(small_story, tmp_path, prefect_limits):
    """The limit (2) is set once; two flows asking for 2 and 4 calls at once stay within it together."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.limits import read_limits, set_limit
    from flows.summarize_flow import summarize_document_flow

    set_limit("openai", 2)
    with FakeOpenAIServer(delay=0.4, answer=concise_answer) as server:
        def one(width):
            return summarize_document_flow(path=str(small_story), db=str(tmp_path / f"w{width}.duckdb"),
                                      base_url=server.base_url, concurrency=width, **API)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(one, [2, 4]))
    assert all(r["status"] in ("ok", "degraded") and r["n_chunks"] >= 6 for r in results)
    assert server.max_in_flight == 2
    assert read_limits()["openai"] == 2


def test_a_flow_holds_no_more_slots_than_the_limit_allows(small_story, tmp_path, prefect_limits):
    """Observed from inside a flow's calls: with the limit at 1 and the flow
    asking for 3 calls at once, every request the server gets arrives while the
    flow holds exactly 1 slot of the limit (each request waits at the server
    until the slots were read, so the reading cannot miss it), one at a time;
    afterwards the slot is given back."""
    import contextvars
    import queue
    import threading

    from prefect.client.orchestration import get_client

    from flows.limits import set_limit
    from flows.summarize_flow import summarize_document_flow

    def active_slots() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name("longsum-openai").active_slots

    arrived, seen = queue.Queue(), []

    def answer(messages):
        read = threading.Event()
        arrived.put(read)
        read.wait(60)
        return None  # the server's ordinary summary

    def reader():  # in the test's context, where the Prefect API is the harness's
        while (read := arrived.get()) is not None:
            seen.append(active_slots())
            read.set()

    set_limit("openai", 1)
    watcher = threading.Thread(target=contextvars.copy_context().run, args=(reader,))
    watcher.start()
    try:
        with FakeOpenAIServer(answer=answer) as server:
            result = summarize_document_flow(path=str(small_story), db=str(tmp_path / "slots.duckdb"),
                                        base_url=server.base_url, concurrency=3, **API)
        assert result["n_chunks"] >= 6 and len(seen) == result["usage"]["calls"] > 0
        assert set(seen) == {1}  # every call made while the flow held one slot, never more
        assert server.max_in_flight == 1
        assert active_slots() == 0
    finally:
        arrived.put(None)
        watcher.join(60)


def test_an_edited_prompt_is_asked_again_an_unedited_one_is_replayed(small_story, tmp_path, monkeypatch):
    import prompts
    from flows.summarize_flow import summarize_document_flow

    db = tmp_path / "prompts.duckdb"
    with FakeOpenAIServer() as server:
        run = lambda: summarize_document_flow(path=str(small_story), db=str(db), base_url=server.base_url, **API)  # noqa: E731
        first = run()
        assert first["usage"]["calls"] > 0
        assert run()["usage"]["calls"] == 0  # nothing changed: every answer replayed
        original = prompts.load

        def edited(name):
            template = original(name)
            if name == "chunk_summary":
                return prompts.PromptTemplate(name, template.text + "\nWrite plainly.\n")
            return template

        monkeypatch.setattr(prompts, "load", edited)
        second = run()
    chunk_calls = Store(db).execute("SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND step LIKE 'chunk:%'",
                                    [second["run_id"]])[0][0]
    assert chunk_calls >= second["n_chunks"]  # every chunk summary asked again with the new template


def test_tasks_reuse_one_api_client_per_configuration(monkeypatch):
    from flows.tasks import worker_backend

    config = RunConfig(model="openai:fake", base_url="http://127.0.0.1:9/v1", context_window=2048)
    monkeypatch.setenv("OPENAI_API_KEY", "first-key")
    first = worker_backend(config)
    assert worker_backend(RunConfig(model="openai:fake", base_url="http://127.0.0.1:9/v1", context_window=2048)) is first
    assert worker_backend(RunConfig(model="openai:other", base_url="http://127.0.0.1:9/v1", context_window=2048)) is not first
    monkeypatch.setenv("OPENAI_API_KEY", "second-key")
    assert worker_backend(config) is not first  # a new key, a new client


def _corpus(tmp_path, scandal_text, books) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "scandal.txt").write_text(excerpt(scandal_text, 300), encoding="utf-8")
    league = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    (corpus / "league.txt").write_text(excerpt(league, 300), encoding="utf-8")
    (corpus / "league.ref1.txt").write_text(excerpt(league, 80), encoding="utf-8")
    (corpus / "broken.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # cannot be read
    return corpus


@pytest.fixture()
def dask_workers(tmp_path, unprivileged):
    """A scheduler and two workers as separate processes, each worker in a
    directory and TMPDIR of its own that the flow never writes to; under root
    (as CI runs) the workers run as an unprivileged user, to whom the flow's
    files (under pytest's root-only temporary directory) are unreadable."""
    from prefect.settings import PREFECT_API_URL

    prefix, shared = unprivileged
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path.cwd())}
    bin_dir = Path(sys.executable).parent
    scheduler_file = tmp_path / "scheduler.json"
    processes = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    homes = []
    for n in range(2):
        home = shared / f"worker{n}"
        (home / "tmp").mkdir(parents=True)
        for folder in (home, home / "tmp"):
            folder.chmod(0o777)
        homes.append(home)
        processes.append(subprocess.Popen(
            # no nanny: its multiprocessing resource tracker dies under a dropped uid
            [*prefix, str(bin_dir / "dask"), "worker", address, "--no-nanny", "--nthreads", "2",
             "--no-dashboard", "--local-directory", str(home / "tmp")],
            cwd=home, env={**env, "TMPDIR": str(home / "tmp"), "HOME": str(home), "PREFECT_HOME": str(home / "prefect")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from dask.distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield address, homes, prefix
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a worker still closing its connections (it once took 30 s)
                process.kill()
                process.wait(timeout=30)


def test_corpus_fans_out_across_dask_workers_that_share_no_files(tmp_path, scandal_text, books, dask_workers):
    from flows.evaluate_flow import evaluate_corpus

    address, homes, prefix = dask_workers
    corpus = _corpus(tmp_path, scandal_text, books)
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    db = flow_dir / "corpus.duckdb"
    if prefix:  # the workers' user cannot read the corpus folder or the flow's directory
        peek = subprocess.run([*prefix, sys.executable, "-c", f"import os; os.listdir({str(corpus)!r})"],
                              capture_output=True, text=True)
        assert peek.returncode != 0 and "Permission denied" in peek.stderr
    with FakeOpenAIServer(delay=0.1) as server:
        configs = [{"method": "hierarchical", "base_url": server.base_url, **API}, {"method": "extractive",
                                                                                      "summary_words": 40}]
        table = evaluate_corpus(source=str(corpus), configs=configs, db=str(db), dask_address=address,
                                concurrency=4, export_dir=str(tmp_path / "parquet"))
        first_requests = len(server.requests)
        again = evaluate_corpus(source=str(corpus), configs=configs, db=str(db), dask_address=address, concurrency=4)
        assert len(server.requests) == first_requests  # the re-run replayed every answer: zero repeated calls
    store = Store(db)
    by_status = dict(store.execute("SELECT status, count(*) FROM runs GROUP BY 1"))
    assert by_status.get("failed") == 4 and by_status.get("ok", 0) + by_status.get("degraded", 0) == 8
    errors = {e for (e,) in store.execute("SELECT DISTINCT error FROM runs WHERE status = 'failed'")}
    assert len(errors) == 1 and "PNG image" in errors.pop()
    rows = {row["configuration"]: row for row in table}
    assert [(r["runs"], r["failed"]) for r in rows.values()] == [(3, 1), (3, 1)]
    assert any(r.get("rouge1") is not None for r in table)  # the document with a reference was scored
    assert [r["configuration"] for r in again] == [r["configuration"] for r in table]
    # The documents ran at the same time: the two stories' summarizing runs overlap (first run only).
    spans = store.execute("SELECT started_at, finished_at FROM runs WHERE method = 'hierarchical' "
                          "AND status <> 'failed' ORDER BY started_at LIMIT 2")
    assert len(spans) == 2 and spans[1][0] < spans[0][1], spans
    # Every run's rows came back from the workers: chunks, summaries, calls.
    ((missing,),) = store.execute(
        "SELECT count(*) FROM runs r WHERE r.status <> 'failed' AND NOT EXISTS "
        "(SELECT 1 FROM summaries s WHERE s.run_id = r.run_id AND s.is_final)")
    assert missing == 0
    # Beside the database only the reports, linked from the flow runs; nothing left in the workers' directories.
    reports = sorted(flow_dir.glob("longsum-report-*.html"))
    assert {p.name for p in flow_dir.iterdir()} - {p.name for p in reports} <= {"corpus.duckdb", "corpus.duckdb.wal"}
    assert len(reports) == 2 and all(r.read_text(encoding="utf-8").count('class="run"') == 6 for r in reports)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    links = {a.data for a in artifacts if a.key == "longsum-report"}
    assert all(any(r.resolve().as_uri() in (link or "") for link in links) for r in reports)
    # ... and a markdown summary table that links the report and has a row per configuration
    tables = [a.data for a in artifacts if a.key == "longsum-corpus-summary" and str(flow_dir) in a.data]
    assert len(tables) == 2 and all(f"[{r.name}]" in " ".join(tables) for r in reports)
    assert all("| hierarchical · openai:fake" in t and "| extractive (baseline) | 3 |" in t for t in tables), tables
    for home in homes:
        assert not list((home / "tmp").glob("longsum-*"))
    import duckdb

    exported = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/parquet/*/runs.parquet')").fetchall()[0][0]
    assert exported == 6


def test_flow_compresses_chunks_and_records_the_saving(small_story, tmp_path):
    """--compress in the flow: each chunk through SCOPE in its own task (an
    OpenAI-compatible server rewrites), rows in compressed_chunks, the saving on the run."""
    from flows.summarize_flow import summarize_document_flow

    db = tmp_path / "compress.duckdb"
    with FakeOpenAIServer() as server:
        result = summarize_document_flow(path=str(small_story), db=str(db), model="openai:fake", base_url=server.base_url,
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
