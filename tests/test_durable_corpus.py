"""A corpus run that survives its night: every finished document is in the
store the moment it finishes, a SIGKILL of the whole process group anywhere
loses nothing finished, and the next run redoes only the rest."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.store import Store
from textdata import excerpt

DOCUMENTS = 8
CONCURRENCY, CALL_CONCURRENCY = 2, 2
KILLS = 10
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory, books) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    text = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    for n in range(DOCUMENTS):
        (folder / f"part{n}.txt").write_text(excerpt(text[n * 4000:], 450), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def squality_file(tmp_path_factory, books) -> Path:
    """SQuALITY-shaped stories, each with one plot answer as reference."""
    path = tmp_path_factory.mktemp("squality") / "stories.jsonl"
    text = (books / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    with path.open("w", encoding="utf-8") as fh:
        for n in range(DOCUMENTS):
            story = excerpt(text[n * 4000:], 450)
            fh.write(json.dumps({"metadata": {"passage_id": str(n)}, "document": story, "questions": [{
                "question_text": "What is the plot of the story?",
                "responses": [{"worker_id": "w", "response_text": story[:300]}]}]}) + "\n")
    return path


def _command(face: str, source: Path, server, db: Path) -> list[str]:
    llm = ["--model", "openai:fake", "--base-url", server.base_url, "--chunk-size", "200", "--summary-words", "40",
           "--concurrency", str(CONCURRENCY), "--db", str(db)]
    if face == "flow":
        return ["summarize", "corpus", str(source), "--method", "hierarchical",
                "--call-concurrency", str(CALL_CONCURRENCY), *llm]
    return ["summarize", "eval", "squality", str(source), "--method", "hierarchical", "--score", "rouge", "-q", *llm]


def _environment(cli_env: dict) -> dict:
    from prefect.settings import PREFECT_API_URL

    return {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_API_KEY": "sk-test"}


def _results(db: Path) -> dict:
    """(corpus, document) -> run status, of every finished pair."""
    if not db.exists():
        return {}
    rows = Store(db, read_only=True).execute(
        "SELECT c.corpus_id, c.item, r.status FROM corpus_results c JOIN runs r USING (run_id)")
    return {(corpus, item): status for corpus, item, status in rows}


def _first_corpus(db: Path) -> str:
    ((corpus,),) = Store(db, read_only=True).execute("SELECT corpus_id FROM corpora ORDER BY started_at LIMIT 1")
    return corpus


def _wait_for_kill_point(process: subprocess.Popen, server, new_calls: int, picks: random.Random) -> bool:
    """Wait until the run has made `new_calls` more paid calls (or, for none, a moment of its
    start-up), then a random part of a call more. False when the run finished first."""
    target = len(server.requests) + new_calls
    deadline = time.time() + (picks.uniform(0.3, 2.0) if new_calls == 0 else 600)
    while len(server.requests) < target and time.time() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    time.sleep(picks.uniform(0.0, 0.15))
    return process.poll() is None


@pytest.mark.parametrize("face", ["flow", "cli"])
def test_a_corpus_killed_anywhere_keeps_every_finished_document(face, tmp_path, corpus_folder, squality_file,
                                                                cli_env, prefect_harness):
    from fake_openai_server import FakeOpenAIServer, concise_answer

    from flows.limits import read_limits

    # Its flows would wait on a limit's slots, and each killed one holds its own until their lease ends.
    assert read_limits() == {}, "an earlier test left a global limit of API calls set (see prefect_limits)"
    source = corpus_folder if face == "flow" else squality_file
    env = _environment(cli_env)
    # A clean run: how many calls the corpus needs.
    with FakeOpenAIServer(delay=0.15, answer=concise_answer) as server:
        clean = subprocess.run(_command(face, source, server, tmp_path / "clean.duckdb"), env=env,
                               capture_output=True, text=True, timeout=600)
        clean_calls = len(server.requests)
    assert clean.returncode == 0, clean.stderr
    assert len(_results(tmp_path / "clean.duckdb")) == DOCUMENTS

    db = tmp_path / "killed.duckdb"
    picks = random.Random(22)
    kept: dict = {}
    kills = 0
    with FakeOpenAIServer(delay=0.15, answer=concise_answer) as server:
        # Each run is killed when the calls paid so far reach the next of KILLS random points within
        # the first 0.8 of a clean run's calls (at once, during start-up, when the run has passed it),
        # a random fraction of a call later. Its calls are replayed by the next run, so the kills fall
        # early, midway and late in the corpus, whatever the machine's speed.
        kill_points = iter(sorted(picks.uniform(0, 0.8 * clean_calls) for _ in range(KILLS)))
        while kills < KILLS:
            # stderr to a file: a pipe nobody reads fills with the flow's log lines and stalls the run
            log = tmp_path / f"run{kills}.log"
            with log.open("w") as stderr:
                process = subprocess.Popen(_command(face, source, server, db), env=env, start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=stderr, text=True)
            if not _wait_for_kill_point(process, server, max(0, round(next(kill_points)) - len(server.requests)), picks):
                assert process.returncode == 0, log.read_text()
                break  # the evaluation finished before this kill
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
            now = _results(db)
            # Everything finished before this kill is still there, as it was.
            assert {k: v for k, v in now.items() if k in kept} == kept, f"kill {kills} lost finished documents"
            kept = now
        assert kills == KILLS, f"the corpus finished after {kills} kills"
        assert kept, "no document was in the store as finished before the final run"
        final = subprocess.run(_command(face, source, server, db), env=env, capture_output=True, text=True,
                               timeout=600)
        total_calls = len(server.requests)
        # A completed evaluation is not resumed: the next run is a new one, all replayed, no call paid.
        again = subprocess.run(_command(face, source, server, db), env=env, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0 and len(server.requests) == total_calls, again.stderr
    assert final.returncode == 0, final.stderr
    results = {key: status for key, status in _results(db).items() if key[0] == _first_corpus(db)}
    # One evaluation, resumed each time: every document finished once, all ok.
    assert len({corpus for corpus, _ in results}) == 1
    assert sorted(item for _, item in results) == sorted(item for _, item in _results(tmp_path / "clean.duckdb"))
    assert set(results.values()) == {"ok"}
    # Paid calls over kills and re-run: a clean run's, plus the steps in flight at the kills.
    in_flight_bound = KILLS * CONCURRENCY * CALL_CONCURRENCY
    print(f"{face}: {kills} kills, {len(kept)} of {DOCUMENTS} documents kept before the final run, "
          f"{total_calls} calls over kills and re-run against {clean_calls} for a clean run")
    assert total_calls <= clean_calls + in_flight_bound, (total_calls, clean_calls, in_flight_bound)
    store = Store(db, read_only=True)
    assert store.execute("SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
    statuses = dict(store.execute("SELECT status, count(*) FROM runs GROUP BY 1"))
    assert statuses.get("interrupted", 0) >= 1, statuses  # the runs the kills cut off, shown as such
    # The run after the finished one was a new evaluation (a kill after the finish may have made one more).
    assert len({corpus for corpus, _ in _results(db)}) >= 2


def test_interrupted_runs_show_in_runs_and_check(tmp_path, cli_env, store):
    """A run whose process died shows as interrupted before anything records it so."""
    from clitools import run

    from pipelines.runner import reap_dead_runs

    store.insert_rows("runs", [{"run_id": "cut", "doc_id": "d", "method": "hierarchical", "model": "m",
                                "status": "running", "pid": 2**22 + 17, "host": os.uname().nodename,
                                "started_at": None}])
    shown = run(["runs", "--db", store.path], cli_env)
    assert shown.returncode == 0 and "interrupted" in shown.stdout and "running" not in shown.stdout
    checked = run(["check", "--db", store.path], cli_env)
    assert checked.returncode != 0 and "whose process is gone: 1" in checked.stdout + checked.stderr
    assert reap_dead_runs(store) == 1
    assert store.execute("SELECT status FROM runs") == [("interrupted",)]
    checked = run(["check", "--db", store.path], cli_env)
    assert "interrupted runs not redone" in checked.stdout + checked.stderr
