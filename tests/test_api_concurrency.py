"""Independent calls run concurrently against an API backend, bounded by a
setting: BooookScore's checker calls and SCOPE's chunk rewrites, through the
real `openai` client against a local OpenAI-compatible server that answers
after a delay like a capable model (judgements that parse, rewrites that keep
the keywords) and counts the requests in flight."""

from __future__ import annotations

import pytest
from capable_answers import capable_answer, flagged
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer

from pipelines.compress.scope import compress_prose
from pipelines.llm import resolve
from pipelines.llm.recording import RecordingLLM
from pipelines.store import DuckDBJournal, Store
from scoring.booookscore import BooookScoreChecker



@pytest.fixture()
def server():
    with FakeOpenAIServer(delay=0.3, answer=capable_answer) as fake:
        yield fake


def api_llm(server, tmp_path, name: str) -> RecordingLLM:
    backend = resolve("openai:fake-judge", base_url=server.base_url, context_window=8192)
    return RecordingLLM(backend, DuckDBJournal(Store(tmp_path / f"{name}.duckdb")))


def story_summary(scandal_text: str) -> str:
    # A real passage stands in for a summary: twelve sentences to judge.
    sentences = excerpt(scandal_text, 400).replace("\n", " ").split(". ")
    return ". ".join(sentences[:12]).strip() + "."


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_checker_calls_run_concurrently_with_the_same_judgements(server, tmp_path, scandal_text, version):
    summary = story_summary(scandal_text)
    sequential = BooookScoreChecker(api_llm(server, tmp_path, "seq"), version, batch_size=2, max_attempts=1).check(summary)
    assert server.max_in_flight == 1
    calls_sequential = len(server.requests)

    server.max_in_flight = 0
    concurrent = BooookScoreChecker(api_llm(server, tmp_path, "conc"), version, batch_size=2, max_attempts=1,
                                    concurrency=4).check(summary)
    assert 1 < server.max_in_flight <= 4
    assert len(server.requests) == 2 * calls_sequential  # a fresh journal: the same calls again, none skipped
    as_tuples = lambda r: [(a.sentence_num, a.status, a.types, a.answer) for a in r.annotations]  # noqa: E731
    assert as_tuples(concurrent) == as_tuples(sequential)
    # every judgement parsed and is the judge's: the even sentences flagged, the others not
    assert len(sequential.annotations) >= 10
    assert all(a.status == "ok" for a in sequential.annotations)
    assert [a.flagged for a in concurrent.annotations] == [flagged(a.sentence_num) for a in concurrent.annotations]


@pytest.mark.slow
def test_scope_rewrites_run_concurrently_and_the_ratio_holds(server, tmp_path, scandal_text):
    text = excerpt(scandal_text, 900)
    llm = api_llm(server, tmp_path, "scope")
    result = compress_prose(text, 0.5, llm, concurrency=3)
    assert len(result.chunks) >= 4
    assert 1 < server.max_in_flight <= 3
    # Rewrites answer "in at most N words" and come in under their targets; the chunks after them make it up
    # to within ScopeSettings.ratio_tolerance (0.476 measured with answers of exactly N words).
    assert 0.45 <= result.ratio <= 0.55, result.summary_line()
    # The model's rewrites were accepted (it keeps the keywords within the words asked): the ones that
    # had to be compressed are rewritten, none fell back to extraction.
    actions = [c.action for c in result.chunks]
    assert "rewritten" in actions and "extractive" not in actions, actions
    assert {c.detail["order"] for c in result.chunks} == set(range(len(result.chunks)))
