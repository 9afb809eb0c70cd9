"""The global API limit holds everywhere: two corpus flows at once, one
fanning out tasks with several calls each and one running in its process
under a budget, never have more requests in flight together than the limit."""

from __future__ import annotations

import subprocess

import pytest

from textdata import excerpt

pytestmark = pytest.mark.slow
LIMIT = 2


@pytest.fixture()
def openai_limit(prefect_limits):
    from flows.limits import set_limit

    set_limit("openai", LIMIT)
    return LIMIT


def test_two_corpus_flows_at_once_stay_within_the_limit(tmp_path, books, cli_env, openai_limit):
    from fake_openai_server import FakeOpenAIServer, concise_answer
    from prefect.settings import PREFECT_API_URL

    text = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    folder = tmp_path / "corpus"
    folder.mkdir()
    for n in range(4):
        (folder / f"part{n}.txt").write_text(excerpt(text[n * 6000:], 700), encoding="utf-8")
    env = {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_API_KEY": "sk-test"}
    with FakeOpenAIServer(delay=0.2, answer=concise_answer) as server:
        common = ["summarize", "corpus", str(folder), "--method", "hierarchical", "--model", "openai:gpt-4o-mini",
                  "--base-url", server.base_url, "--chunk-size", "200", "--summary-words", "40",
                  "--concurrency", "2", "--call-concurrency", "4"]
        fanned = subprocess.Popen([*common, "--db", str(tmp_path / "tasks.duckdb")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        budgeted = subprocess.Popen([*common, "--max-cost", "5", "--db", str(tmp_path / "budget.duckdb")],
                                    env={**env, "LONGSUM_PRICE_AS": "openai:gpt-4o-mini"},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = [process.communicate(timeout=600) for process in (fanned, budgeted)]
        for process, (_, err) in zip((fanned, budgeted), results):
            assert process.returncode == 0, err
        asked = len(server.requests)
        peak = server.max_in_flight
    assert asked >= 2 * 4 * 3  # both corpora ran: 4 documents each, several steps a document
    assert 1 <= peak <= LIMIT, f"{peak} requests in flight under a limit of {LIMIT}"
