"""Every paid answer, run row, failure and score survives a DuckDB file that
another process holds (a writing connection) for longer than the lock
timeout: each writer path of the store spools what it was given
(`FILE.duckdb.spool.jsonl`, fsync'd) and the next writing connection applies
it. Checked writer by writer, and through both Prefect flows with the file
held while they run."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer

from pipelines.store import Store, StoreError, spool_path

HOLD = textwrap.dedent(
    """
    import sys, time, duckdb
    while True:  # a writing connection, taken as soon as the file is free
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.IOException:
            time.sleep(0.01)
    print("holding", flush=True)
    sys.stdin.read()  # until the test lets go
    con.close()
    """
)


class Holder:
    """Another process with a writing connection to the file, from `start()` until `release()`."""

    def __init__(self, db):
        self.db = db
        self.process = None
        self.holding = threading.Event()

    def start(self) -> "Holder":
        self.process = subprocess.Popen([sys.executable, "-c", HOLD, str(self.db)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "holding"
        self.holding.set()
        return self

    def release(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


@pytest.fixture()
def short_timeout(monkeypatch):
    monkeypatch.setenv("LONGSUM_DB_TIMEOUT", "0.3")


def _record(call_id: str, run_id: str | None, request_hash: str, response: str, cached: bool = False):
    from pipelines.llm.recording import CallRecord

    return CallRecord(
        call_id=call_id, run_id=run_id, request_hash=request_hash, backend="openai", model="fake", template="t",
        template_hash="0" * 64, step="chunk:0", request=f'{{"messages": ["{request_hash}"]}}', response=response,
        finish_reason="stop", input_tokens=10, cached_input_tokens=0, output_tokens=3, latency_s=0.1, cost_usd=0.01,
        cached=cached, status="ok", error=None, created_at=time.time(),
    )


@pytest.mark.slow
def test_every_writer_path_keeps_its_rows_while_another_process_holds_the_file(tmp_path, short_timeout):
    """Calls from flow steps (a replayed call_id becomes a cached replay), a
    worker's run tables, a failure, a failed run's update, scores and journaled
    answers: all spooled in order while the file is held, none raises, and all
    of it is in the store after the next writing connection."""
    from scoring import write as write_scores

    from pipelines.corpus import CorpusItem
    from pipelines.evaluate import record_failure
    from pipelines.runner import RunConfig, fail_run, summarize_file
    from pipelines.store import DuckDBJournal, read_spool, run_tables
    from scripted import ScriptedBackend

    db = tmp_path / "held.duckdb"
    store = Store(db)
    worker = Store(tmp_path / "worker.duckdb")  # a corpus task's own store
    story = tmp_path / "story.txt"
    story.write_text("Holmes waited by the fire while Watson read the letter aloud. " * 120, encoding="utf-8")
    finished = summarize_file(story, RunConfig(model="scripted", chunk_size=128, summary_words=40), worker,
                              backend=ScriptedBackend())
    tables = run_tables(worker, finished.run_id)
    store.insert_rows("runs", [{"run_id": "r-running", "status": "running", "method": "hierarchical"}])
    record_calls_before = _record("c-known", "r-running", "h-known", "known answer")
    from pipelines.store import record_calls

    record_calls(store, "r-running", [record_calls_before])

    holder = Holder(db).start()
    try:
        with pytest.raises(StoreError, match="in use by another process"):
            store.execute("SELECT 1")  # the file really is held
        record_calls(store, "r-running", [_record("c-step", None, "h-step", "step answer"),
                                          record_calls_before])  # the second: a task result replayed
        from pipelines.store import add_run_tables

        add_run_tables(store, tables)
        record_failure(store, "r-unreadable", CorpusItem(name="broken.txt", path=str(tmp_path / "broken.txt")),
                       RunConfig(), "cannot read: not a text", 0.5)
        fail_run(store, "r-running", RuntimeError("worker lost"), 2.0)
        write_scores(store, [{"score_id": "s1", "run_id": finished.run_id, "summary_id": "x", "metric": "rouge1",
                              "variant": "f", "aggregate": "max", "value": 0.25}])
        DuckDBJournal(store).record(_record("c-journal", None, "h-journal", "journal answer"))
        assert len(read_spool(store)) == 6  # one entry per write, kept on disk
        assert DuckDBJournal(store).lookup("h-journal").response == "journal answer"  # seen while it waits (spool)
    finally:
        holder.release()

    after = Store(db)
    calls = dict(after.execute("SELECT call_id, response FROM llm_calls"))
    assert calls["c-step"] == "step answer" and calls["c-journal"] == "journal answer"
    assert after.execute("SELECT count(*) FROM llm_calls WHERE run_id = 'r-running' AND cached "
                         "AND request_hash = 'h-known'") == [(1,)]  # the replayed task result: a cached replay
    assert after.execute("SELECT count(*) FROM llm_calls WHERE run_id = ?", [finished.run_id]) == \
        [(finished.usage.calls,)]
    assert after.execute("SELECT count(*) FROM summaries WHERE run_id = ? AND text IS NOT NULL",
                         [finished.run_id]) == [(len(finished.records),)]
    assert after.execute("SELECT count(*) FROM chunks WHERE run_id = ?", [finished.run_id]) == [(finished.n_chunks,)]
    assert after.execute("SELECT status FROM runs WHERE run_id = ?", [finished.run_id]) == [(finished.status,)]
    assert after.execute("SELECT status, error FROM runs WHERE run_id = 'r-unreadable'") == \
        [("failed", "cannot read: not a text")]
    # The failed run's update counted its calls as they were once applied: the ones spooled before it too.
    assert after.execute("SELECT status, error, llm_calls, cache_hits FROM runs WHERE run_id = 'r-running'") == \
        [("failed", "RuntimeError: worker lost", 2, 1)]
    assert after.execute("SELECT value FROM scores WHERE score_id = 's1'") == [(0.25,)]
    assert read_spool(after) == [] and after.execute("SELECT count(*) FROM spool_applied") == [(0,)]
    assert not spool_path(after).with_name(db.name + ".spool.rejected.jsonl").exists()


def test_a_spooled_entry_is_applied_once_when_the_merge_dies_before_emptying_the_spool(tmp_path, short_timeout,
                                                                                      monkeypatch):
    """The process dies after the spool's entries were applied and before it
    emptied the spool: the next writing connection skips what was applied."""
    import pipelines.store.spool

    db = tmp_path / "twice.duckdb"
    store = Store(db)
    holder = Holder(db).start()
    try:
        store.insert_rows("scores", [{"score_id": "s1", "run_id": "r1", "metric": "rouge1", "value": 0.5}])
    finally:
        holder.release()

    def die(fh):
        raise KeyboardInterrupt("killed before emptying the spool")

    truncate = pipelines.store.spool._truncate
    monkeypatch.setattr(pipelines.store.spool, "_truncate", die)
    with pytest.raises(KeyboardInterrupt):
        Store(db).execute("SELECT 1")
    monkeypatch.setattr(pipelines.store.spool, "_truncate", truncate)
    assert spool_path(store).stat().st_size > 0  # still there, already applied
    assert Store(db).execute("SELECT score_id FROM scores") == [("s1",)]  # (scores has no key to refuse a copy)
    assert spool_path(store).stat().st_size == 0


@pytest.fixture(scope="module")
def harness(prefect_harness):
    yield


def _held_while_answering(db):
    """An OpenAI-compatible answer that, on the first request, has another
    process take the file and waits until it holds it: from then on every
    write of the flow meets a held file."""
    holder = Holder(db)
    lock = threading.Lock()

    def answer(messages):
        with lock:
            if holder.process is None:
                holder.start()
        return None  # the server's scripted answer

    return holder, answer


@pytest.mark.slow
def test_a_summarize_flow_keeps_every_step_call_while_the_file_is_held(tmp_path, scandal_text, short_timeout,
                                                                         harness):
    """Held from the first request to the end of the flow: every step's calls
    (`record_calls`), the summaries and the finished run are spooled and in
    the store afterwards; the re-run pays for nothing."""
    from flows.summarize_flow import summarize_document_flow

    story = tmp_path / "story.txt"
    story.write_text(excerpt(scandal_text, 500), encoding="utf-8")
    db = tmp_path / "flow.duckdb"
    holder, answer = _held_while_answering(db)
    settings = dict(path=str(story), db=str(db), model="openai:fake", chunk_size=120, summary_words=40,
                    context_window=2048, concurrency=3)
    with FakeOpenAIServer(answer=answer) as server:
        try:
            result = summarize_document_flow(base_url=server.base_url, **settings)
            assert holder.holding.is_set() and spool_path(Store(db)).stat().st_size > 0
        finally:
            holder.release()
        paid = len(server.requests)
        store = Store(db)
        assert store.execute("SELECT count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached") == [(paid,)]
        assert store.execute("SELECT status, llm_calls, n_summaries FROM runs") == \
            [(result["status"], paid, result["n_summaries"])]
        assert store.execute("SELECT text FROM summaries WHERE is_final") == [(result["summary"],)]
        again = summarize_document_flow(base_url=server.base_url, **settings)
        assert len(server.requests) == paid and again["usage"]["cache_hits"] == paid


@pytest.mark.slow
def test_a_corpus_flow_loses_no_run_failure_score_or_paid_call_while_the_file_is_held(tmp_path, scandal_text, books,
                                                                                    short_timeout, harness):
    """Held from the first request to the end of the flow: whatever the flow
    produced meanwhile (runs, a configuration that failed, scores, paid calls)
    is in the store afterwards, no run stays `running`, and the re-run pays for
    no answer twice. The flow may stop where it must read the file (a held
    file cannot be read), never because a write met it."""
    from flows.evaluate_flow import evaluate_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    league = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    (corpus / "league.txt").write_text(excerpt(league, 300), encoding="utf-8")
    (corpus / "league.ref1.txt").write_text(excerpt(league, 80), encoding="utf-8")
    (corpus / "scandal.txt").write_text(excerpt(scandal_text, 300), encoding="utf-8")
    (corpus / "broken.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # cannot be read
    db = tmp_path / "corpus.duckdb"
    holder, answer = _held_while_answering(db)
    with FakeOpenAIServer(answer=answer) as server:
        api = dict(model="openai:fake", base_url=server.base_url, summary_words=40, context_window=2048)
        configs = [{"method": "hierarchical", "chunk_size": 120, **api},
                   {"method": "incremental", "chunk_size": 1900, **api},  # cannot fit its context: fails
                   {"method": "extractive", "summary_words": 40}]
        try:
            evaluate_corpus(source=str(corpus), configs=configs, db=str(db), concurrency=2)
        except StoreError as exc:  # a read met the held file
            assert "in use by another process" in str(exc)
        finally:
            assert holder.holding.is_set() and spool_path(Store(db)).stat().st_size > 0  # writes met it too
            holder.release()
        paid = len(server.requests)
        store = Store(db)
        assert store.execute("SELECT count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached") == [(paid,)]
        assert store.execute("SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
        pairs = store.execute("SELECT DISTINCT parse_filename(document_path), method FROM runs")
        assert len(pairs) == 9  # every document x configuration has its run row (the unreadable one too)
        assert store.execute("SELECT count(*) FROM runs WHERE parse_filename(document_path) = 'broken.txt' "
                             "AND status = 'failed' AND error LIKE 'cannot read%'") == [(3,)]
        assert store.execute("SELECT count(DISTINCT document_path) FROM runs WHERE method = 'incremental' "
                             "AND status = 'failed' AND parse_filename(document_path) <> 'broken.txt'") == [(2,)]
        assert store.execute("SELECT count(*) FROM runs r WHERE status IN ('ok', 'degraded') AND NOT EXISTS "
                             "(SELECT 1 FROM summaries s WHERE s.run_id = r.run_id AND s.is_final)") == [(0,)]

        table = evaluate_corpus(source=str(corpus), configs=configs, db=str(db), concurrency=2)
        assert len(table) == 3
        assert store.execute("SELECT request_hash FROM llm_calls WHERE status = 'ok' AND NOT cached "
                             "GROUP BY 1 HAVING count(*) > 1") == []  # nothing paid for was asked again
        assert store.execute("SELECT count(DISTINCT method) FROM runs r WHERE status IN ('ok', 'degraded') "
                             "AND parse_filename(document_path) = 'league.txt' AND EXISTS "
                             "(SELECT 1 FROM scores s WHERE s.run_id = r.run_id AND s.metric = 'rouge1')") == [(2,)]


def test_a_new_database_file_is_never_seen_half_made(tmp_path, monkeypatch):
    """DuckDB creates a file and only then locks it and writes its header: a second run
    opening a new --db in that moment refused it as "not a DuckDB database" (two CLI runs
    on one new file, in CI). The store makes the file beside it and links it into place, so
    DuckDB is only ever asked to open a whole file at the shared path, and a run that loses
    the race to make it keeps the winner's file and rows."""
    import duckdb

    from pipelines.store.connection import _create_whole

    db = tmp_path / "new.duckdb"
    sizes_when_opened = []
    real_connect = duckdb.connect

    def watching_connect(database, *args, **kwargs):
        if str(database) == str(db):
            sizes_when_opened.append(db.stat().st_size if db.exists() else 0)
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", watching_connect)
    store = Store(db)
    store.execute("INSERT INTO meta VALUES ('kept', 'yes')")
    assert sizes_when_opened and min(sizes_when_opened) > 0

    _create_whole(db)  # the loser of the race, a moment after the winner made the file
    assert store.execute("SELECT value FROM meta WHERE key = 'kept'") == [("yes",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.duckdb"]
