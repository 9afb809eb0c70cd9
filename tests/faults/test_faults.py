"""Faults from a local fault-injecting OpenAI-compatible server, SIGKILL at
random points, and two processes on one database."""

import json
import random
import signal
import subprocess
import time

import pytest
from clitools import assert_one_line_error, run
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer, concise_answer

from pipelines.integrity import verify
from pipelines.store import Store

FAST = ["--chunk-size", "200", "--summary-words", "50", "--retries", "3", "--timeout", "2"]


@pytest.fixture(scope="module")
def story(tmp_path_factory, scandal_text):
    path = tmp_path_factory.mktemp("faults") / "story.txt"
    path.write_text(excerpt(scandal_text, 900), encoding="utf-8")
    return path


def summarize(story, server, db, env, *extra):
    return run([story, "--model", "openai:fake", "--base-url", server.base_url, "--db", db, "--json", "-q", *FAST, *extra], env)


def reference_run(story, env, db, answer=None) -> dict:
    """The JSON of an uninterrupted, fault-free run (the server answering with `answer`)."""
    with FakeOpenAIServer(answer=answer) as server:
        result = summarize(story, server, db, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference_summary(story, cli_env, tmp_path_factory):
    """The summary of an uninterrupted, fault-free run."""
    return reference_run(story, cli_env, tmp_path_factory.mktemp("ref") / "ref.duckdb")


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults",
    [
        ["429", "429", "429"],
        ["500", "500"],
        ["hang"],
        ["drop", "drop"],
        ["malformed", "malformed"],
        ["empty", "empty", "empty"],
        ["429", "500", "drop", "malformed", "empty", "hang"],
    ],
    ids=["rate-limited", "server-error", "timeout", "dropped", "malformed-json", "empty-completion", "mixed"],
)
def test_transient_faults_are_retried_and_the_run_completes(story, cli_env, tmp_path, reference_summary, faults):
    db = tmp_path / "transient.duckdb"
    with FakeOpenAIServer(faults=list(faults), hang_s=6) as server:
        result = summarize(story, server, db, cli_env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert not server.faults  # every fault was served
    assert out["status"] in ("ok", "degraded")
    if "empty" not in faults:
        assert out["summary"] == reference_summary["summary"]
    assert verify(Store(db)) == []


@pytest.mark.slow
@pytest.mark.parametrize("fault, fragment", [("401", "rejected the API key"), ("500", "HTTP 500")])
def test_permanent_faults_fail_cleanly_then_resume_without_repeating(story, cli_env, tmp_path, reference_summary, fault, fragment):
    db = tmp_path / "permanent.duckdb"
    # the first calls succeed, then the server fails for good
    with FakeOpenAIServer(faults=[None, None, None] + [fault] * 40) as server:
        failed = summarize(story, server, db, cli_env)
        port = server._server.server_address[1]
    assert_one_line_error(failed, fragment)
    store = Store(db)
    ((status, error),) = store.execute("SELECT status, error FROM runs")
    assert status == "failed" and fragment in error
    done = store.execute("SELECT count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached")[0][0]
    assert done == 3

    with FakeOpenAIServer(port=port) as server:  # the same server (its URL is part of the cache identity), now well
        resumed = summarize(story, server, db, cli_env)
        out = json.loads(resumed.stdout)
        assert len(server.requests) == out["usage"]["calls"]
    assert out["usage"]["cache_hits"] == 3 and out["summary"] == reference_summary["summary"]
    repeated = store.execute("SELECT request_hash FROM llm_calls WHERE status = 'ok' AND NOT cached GROUP BY 1 HAVING count(*) > 1")
    assert repeated == [] and verify(store) == []


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(story, cli_env, tmp_path):
    """Ten kills: one during start-up, the others after a random number of
    calls plus a random delay (mid-call, mid-write, between levels). The
    server's answers fit their budgets: no step is asked twice, so each of the
    twenty runs is short."""
    reference_summary = reference_run(story, cli_env, tmp_path / "reference.duckdb", answer=concise_answer)
    rng = random.Random(20261128)
    total_calls = reference_summary["usage"]["calls"]
    trials = []
    for trial in range(10):
        db = tmp_path / f"kill{trial}.duckdb"
        with FakeOpenAIServer(delay=0.05, answer=concise_answer) as server:
            cmd = ["summarize", str(story), "--model", "openai:fake", "--base-url", server.base_url, "--db", str(db),
                   "--json", "-q", *FAST]
            child = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            target = 0 if trial == 0 else rng.randint(1, total_calls - 1)
            deadline = time.time() + 120
            while len(server.requests) < target and child.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.12))
            killed = child.poll() is None
            child.send_signal(signal.SIGKILL)
            child.wait()
            made_before = len(server.requests)
            again = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        out = json.loads(again.stdout)
        assert out["summary"] == reference_summary["summary"], f"trial {trial}"
        store = Store(db)
        assert verify(store) == [], f"trial {trial}"
        repeated = store.execute(
            "SELECT request_hash FROM llm_calls WHERE status = 'ok' AND NOT cached GROUP BY 1 HAVING count(*) > 1")
        assert repeated == [], f"trial {trial}: a finished call was repeated"
        assert out["usage"]["calls"] + out["usage"]["cache_hits"] >= total_calls
        trials.append((killed, made_before, out["usage"]["cache_hits"]))
    assert sum(1 for killed, made, _ in trials if killed and made > 0) >= 8, trials


def both_asking():
    """A server answer that holds the first request until a second one is in
    flight: the two processes are then both mid-run on the database at once
    (each answer they get next is journaled while the other also writes)."""
    import threading

    state = {"waiting": 0, "released": threading.Event()}
    lock = threading.Lock()

    def answer(messages):
        with lock:
            state["waiting"] += 1
            if state["waiting"] >= 2:
                state["released"].set()
        state["released"].wait(30)  # no second process within 30 s: they are taking turns
        return None  # the server's ordinary summary

    return answer, state["released"]


@pytest.mark.slow
def test_two_processes_share_one_database(story, cli_env, tmp_path, scandal_text):
    """Both processes are mid-run on the one file at once, and their writes
    interleave (each holds it only for a unit of work): contention happens, and
    both runs finish whole."""
    other = tmp_path / "other.txt"
    other.write_text(excerpt(scandal_text[len(scandal_text) // 2:], 700))
    db = tmp_path / "shared.duckdb"
    answer, together = both_asking()
    with FakeOpenAIServer(delay=0.05, answer=answer) as server:
        procs = [
            subprocess.Popen(["summarize", str(path), "--model", "openai:fake", "--base-url", server.base_url,
                              "--db", str(db), "--json", "-q", *FAST], env=cli_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for path in (story, other)
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
    run_ids = {json.loads(stdout)["run_id"] for stdout, _ in outputs}
    store = Store(db)
    assert {r for (r,) in store.execute("SELECT run_id FROM runs WHERE status = 'ok'")} == run_ids
    calls = store.execute("SELECT count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached")[0][0]
    assert calls == sum(json.loads(stdout)["usage"]["calls"] for stdout, _ in outputs)
    assert verify(store) == []
    # They contended: both asked at once, their runs overlap, and their journaled calls alternate.
    assert together.is_set(), "the second process never asked while the first waited"
    (overlap,) = store.execute("SELECT max(started_at) < min(finished_at) FROM runs")[0]
    order = [r for (r,) in store.execute("SELECT run_id FROM llm_calls WHERE NOT cached ORDER BY created_at")]
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert overlap and switches >= 2, (overlap, order)


@pytest.mark.llm
def test_a_flow_with_parallel_tasks_opens_one_writer(story, tmp_path, monkeypatch, prefect_harness):
    import threading

    from flows.summarize_flow import summarize_document_flow
    from pipelines import store as store_module

    opened = []
    real_open = store_module.Store._open

    def spy(self, config, *args, **kwargs):
        opened.append((threading.current_thread().name, self.read_only))
        return real_open(self, config, *args, **kwargs)

    monkeypatch.setattr(store_module.Store, "_open", spy)
    with FakeOpenAIServer(delay=0.2) as server:
        result = summarize_document_flow(path=str(story), model="openai:fake", base_url=server.base_url, chunk_size=120,
                                    summary_words=40, db=str(tmp_path / "one.duckdb"), concurrency=4)
    assert result["n_chunks"] >= 6 and server.max_in_flight > 1  # tasks did run in parallel
    writers = {name for name, read_only in opened if not read_only}
    assert writers == {threading.current_thread().name}, writers  # only the flow's own thread
