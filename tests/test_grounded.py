"""Grounded merging (issue 26, item 3): each merge prompt carries the source
passages of its own chunks most relevant to the summaries it merges, within
the share of the merge's room they are given; the packing and the preflight
count them (the property test in test_preflight_property.py draws grounded
cases too)."""

from __future__ import annotations

import re

import pytest
from conftest import BOOKS, excerpt
from scripted import ScriptedBackend, echo_answer

from pipelines.documents import Document
from pipelines.runner import GROUNDING_SHARE, RunConfig, summarize_document
from pipelines.summarize.passage_ids import given

WINDOW = 1024
pytestmark = pytest.mark.slow  # each run embeds its passages (MiniLM): seconds


@pytest.fixture(scope="module")
def document():
    text = excerpt((BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8"), 1500)
    return Document(path="scandal.txt", text=text, kind="book", encoding="utf-8")


def _run(document, tmp_path, grounded: bool, method: str = "hierarchical", window: int = WINDOW):
    from pipelines.store import Store

    backend = ScriptedBackend(echo_answer, context_window=window)
    config = RunConfig(method=method, model="scripted", chunk_size=160, summary_words=60, grounded=grounded)
    result = summarize_document(document, config, Store(tmp_path / f"grounded-{grounded}.duckdb"), backend=backend)
    return result, backend


def _block(request, tag: str) -> str | None:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", request.messages[-1]["content"], re.S)
    return found.group(1) if found else None


def test_each_merge_reads_passages_of_its_own_chunks_within_its_window(document, tmp_path):
    result, backend = _run(document, tmp_path, grounded=True)
    merges = [r for r in backend.requests if _block(r, "summaries") is not None]
    assert merges and all(_block(r, "passages") for r in merges)
    assert result.n_chunks >= 6
    normalized = " ".join(document.text.split())
    for request in merges:
        passages = list(given(_block(request, "passages")).values())
        for passage in passages:
            assert passage in normalized  # the document's own words, whole passages
        prompt = sum(backend.count_tokens(m["content"]) for m in request.messages)
        assert prompt + request.max_tokens <= WINDOW
        # Passages take at most their share of what the summaries and passages may fill.
        passage_tokens = sum(backend.count_tokens(p) + 6 for p in passages)
        assert passage_tokens <= GROUNDING_SHARE * (WINDOW - request.max_tokens)


def test_a_merge_is_given_passages_of_its_chunks_only(document, tmp_path):
    """A level-1 merge of chunks a..b reads passages from a..b: located in the document, each
    passage lies within the merged chunks' span."""
    from pipelines.store import Store

    result, backend = _run(document, tmp_path, grounded=True)
    store_rows = Store(tmp_path / "grounded-True.duckdb").execute(
        "SELECT idx, start_char, end_char FROM chunks WHERE run_id = ? ORDER BY idx", [result.run_id])
    spans = {idx: (start, end) for idx, start, end in store_rows}
    level_one = [r for r in result.records if r.kind == "merge" and r.level == 1]
    requests = [r for r in backend.requests if _block(r, "passages") is not None]
    assert len(level_one) >= 2 and len(requests) >= len(level_one)
    for merge, request in zip(level_one, requests):  # level 1's merges are asked first, in order
        first, last = spans[merge.first_chunk][0], spans[merge.last_chunk][1]
        region = " ".join(document.text[first:last].split())
        for passage in given(_block(request, "passages")).values():
            assert passage in region, (merge.first_chunk, merge.last_chunk, passage[:80])


def test_passages_come_from_the_merged_chunks_even_when_another_chunk_matches_better(document):
    """The summaries being merged retell a later chunk (a model's slip): the passages still come
    from the chunks this merge covers, never from the one they retell."""
    from pipelines.chunking import fixed_window_chunks
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.summarize.common import SummarizeSettings, SummaryRecord
    from pipelines.summarize.grounding import Grounding
    from pipelines.summarize.hierarchical import HierarchicalSummarizer
    from pipelines.text import sentences

    backend = ScriptedBackend(echo_answer, context_window=WINDOW)
    chunks = fixed_window_chunks(document.text, 300, backend.count_tokens)
    summarizer = HierarchicalSummarizer(RecordingLLM(backend, MemoryJournal()),
                                        SummarizeSettings(grounding_share=GROUNDING_SHARE))
    summarizer.sources = Grounding(chunks)
    retold = " ".join(sentences(chunks[-1].text)[:3])
    group = [SummaryRecord(level=0, idx=i, kind="chunk", text=retold, token_limit=80, word_limit=60,
                           first_chunk=i, last_chunk=i) for i in (0, 1)]
    merged = " ".join((chunks[0].text + chunks[1].text).split())
    passages = list(given(summarizer.grounding(group, budget=400)).values())
    assert passages and all(p in merged for p in passages)


def test_a_plain_run_reads_no_passages_and_grounding_is_recorded(document, tmp_path):
    import json

    from pipelines.store import Store

    plain, backend = _run(document, tmp_path, grounded=False)
    assert not any(_block(r, "passages") for r in backend.requests)
    grounded, _ = _run(document, tmp_path, grounded=True)
    params = dict(Store(tmp_path / "grounded-True.duckdb").execute(
        "SELECT run_id, params FROM runs WHERE run_id = ?", [grounded.run_id]))
    assert json.loads(params[grounded.run_id])["grounded"] is True


def test_grounding_is_refused_for_the_extractive_baseline():
    RunConfig(method="incremental", grounded=True).validate()
    with pytest.raises(ValueError, match="--grounded"):
        RunConfig(method="extractive", grounded=True).validate()


def test_each_update_reads_passages_of_the_parts_already_read_within_its_window(document, tmp_path):
    """An update of part j reads passages of parts 0..j-1 only (the new part is in its prompt whole),
    within its share of the room its inputs may fill; the summary keeps no passage id."""
    from pipelines.store import Store

    result, backend = _run(document, tmp_path, grounded=True, method="incremental", window=2048)
    assert result.status == "ok" and result.n_chunks >= 6
    spans = dict((idx, (start, end)) for idx, start, end in Store(tmp_path / "grounded-True.duckdb").execute(
        "SELECT idx, start_char, end_char FROM chunks WHERE run_id = ? ORDER BY idx", [result.run_id]))
    updates = [r for r in backend.requests if _block(r, "story_so_far") is not None]
    assert len(updates) == result.n_chunks - 1
    for request in updates:
        part = int(re.search(r"\(part (\d+) of", request.messages[-1]["content"]).group(1)) - 1
        passages = list(given(_block(request, "passages") or "").values())
        assert passages, part
        before = " ".join(document.text[:spans[part][0]].split())
        assert all(p in before for p in passages)
        prompt = sum(backend.count_tokens(m["content"]) for m in request.messages)
        assert prompt + request.max_tokens <= 2048
        assert sum(backend.count_tokens(p) + 6 for p in passages) <= GROUNDING_SHARE * (2048 - request.max_tokens)
    assert not any("[P" in r.text for r in result.records)


def test_an_update_with_no_room_left_runs_without_passages(document):
    """Passages take only what the summary and the new part leave: none when they fill the window."""
    from pipelines.chunking import fixed_window_chunks
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.summarize.common import SummarizeSettings
    from pipelines.summarize.grounding import Grounding
    from pipelines.summarize.incremental import IncrementalSummarizer

    backend = ScriptedBackend(echo_answer, context_window=1024)
    chunks = fixed_window_chunks(document.text, 300, backend.count_tokens)
    summarizer = IncrementalSummarizer(RecordingLLM(backend, MemoryJournal()),
                                       SummarizeSettings(grounding_share=GROUNDING_SHARE))
    summarizer.sources = Grounding(chunks)
    short = " ".join(chunks[0].text.split()[:40])
    assert given(summarizer.grounding(short, chunks[2], 100))
    long = " ".join(document.text.split()[:600])  # with the part, more than the window holds
    assert summarizer.passage_budget(long, chunks[2], 100) == 0
    assert summarizer.grounding(long, chunks[2], 100) == ""
    assert summarizer.grounding(short, chunks[0], 100) == ""  # nothing read before the first part


@pytest.mark.llm
@pytest.mark.parametrize("method, steps", [("hierarchical", "merge%"), ("incremental", "update:%")])
def test_grounded_runs_through_the_embedded_model_stay_within_the_preflight(gemma, tmp_path, method, steps,
                                                                           index_builds):
    """The tiny embedded model: every merge, and every update after the first, carries passages,
    and the run's calls and prompt tokens fall within what the preflight (the same code, a
    planning backend) bounds. The preflight's three planned runs and the run embed the
    document's passages once."""
    from pipelines.llm.llamacpp import LlamaCppBackend
    from pipelines.plan import estimate_document
    from pipelines.store import Store

    text = excerpt((BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8"), 700)
    document = Document(path="league.txt", text=text, kind="book", encoding="utf-8")
    backend = LlamaCppBackend("gemma-3-270m", context_window=1024)
    config = RunConfig(method=method, chunk_size=200, summary_words=40, context_window=1024,
                       max_attempts=1, grounded=True)
    estimate = estimate_document(document, config, backend)
    store = Store(tmp_path / "gemma.duckdb")
    result = summarize_document(document, config, store, backend=backend)
    grounded = store.execute("SELECT request FROM llm_calls WHERE run_id = ? AND step LIKE ? AND step NOT LIKE 'update:0#%'",
                             [result.run_id, steps])
    assert grounded and all("<passages>" in request for (request,) in grounded)
    assert estimate.calls_min <= result.usage.calls <= estimate.calls_max
    assert estimate.input_min <= result.usage.input_tokens <= estimate.input_max
    assert len(index_builds) == 1 and index_builds[0] > 1, index_builds
