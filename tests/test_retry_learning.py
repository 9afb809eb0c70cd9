"""The retry policy learns within a run (issue 24, item 7): a model that
failed every attempt of its first steps gets one attempt per later step,
degraded with the same reason; a model that answers keeps its full retries.
Scripted backends here; the demo story with the embedded Gemma is measured
in test_summarize_llamacpp.py."""

import pytest
from scripted import ScriptedBackend, echo_answer

from pipelines.chunking import chunk_text
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from pipelines.summarize.common import LEARN_STEPS, SummarizeSettings
from pipelines.summarize.hierarchical import HierarchicalSummarizer
from pipelines.summarize.incremental import IncrementalSummarizer

SETTINGS = SummarizeSettings(summary_words=60, max_attempts=3)


def echo_prompt(request) -> str:
    """What a base model does: copy the instructions back."""
    return request.messages[0]["content"]


def step_of(request) -> str:
    """Which chunk a request is about ('part 3 of 7'), or 'merge'."""
    content = request.messages[-1]["content"]
    if "<summaries>" in content:
        return "merge"
    import re

    found = re.search(r"part (\d+) of", content)
    return found.group(1) if found else "?"


def chunks_of(scandal_text, n_words=1400):
    backend = ScriptedBackend()
    return chunk_text(" ".join(scandal_text.split()[:n_words]), 200, backend.count_tokens)


class RecipeExecutor:
    """Like the flows' executor: every step runs on an owner rebuilt from the
    recipe (a Prefect task on another worker), never the driver's object."""

    def __init__(self, llm):
        self.llm = llm

    def map(self, step, calls):
        recipe = step.__self__.recipe()
        return [getattr(recipe.factory(self.llm, **recipe.options), step.__name__)(*args) for args in calls]


@pytest.mark.parametrize("workflow", [HierarchicalSummarizer, IncrementalSummarizer])
def test_a_model_that_cannot_answer_is_asked_once_per_later_step(scandal_text, workflow):
    chunks = chunks_of(scandal_text)
    backend = ScriptedBackend(answer=echo_prompt)
    records = workflow(RecordingLLM(backend, MemoryJournal()), SETTINGS).run(chunks)
    steps = [r for r in records if r.kind != "extractive"]
    first, later = steps[:LEARN_STEPS], steps[LEARN_STEPS:]
    assert len(chunks) >= 5 and later
    assert [r.attempts for r in first] == [3] * LEARN_STEPS and all(r.degraded for r in steps)
    assert [r.attempts for r in later] == [1] * len(later)
    assert len(backend.requests) == 3 * LEARN_STEPS + len(later)
    reason = first[0].reasons
    assert "prompt echo" in reason
    for r in later:  # degraded with the reason the first steps showed
        assert "one attempt only" in r.note and reason in r.note, r.note


def test_the_same_decisions_on_an_executor_that_rebuilds_each_step(scandal_text):
    chunks = chunks_of(scandal_text)
    threads = HierarchicalSummarizer(RecordingLLM(ScriptedBackend(answer=echo_prompt), MemoryJournal()),
                                     SETTINGS).run(chunks)
    backend = ScriptedBackend(answer=echo_prompt)
    llm = RecordingLLM(backend, MemoryJournal())
    rebuilt = HierarchicalSummarizer(llm, SETTINGS).run(chunks, RecipeExecutor(llm))
    assert [(r.kind, r.idx, r.attempts, r.note, r.text) for r in rebuilt] == \
           [(r.kind, r.idx, r.attempts, r.note, r.text) for r in threads]
    assert len(backend.requests) == 3 * LEARN_STEPS + len(rebuilt) - LEARN_STEPS


def test_a_model_that_answers_keeps_its_retries_for_an_odd_answer(scandal_text):
    """Good answers, except that the first two attempts at chunk 4 echo the
    prompt: that step is retried and answered, nothing degraded."""
    chunks = chunks_of(scandal_text)
    tries = {}

    def odd(request):
        step = step_of(request)
        tries[step] = tries.get(step, 0) + 1
        return echo_prompt(request) if step == "4" and tries[step] <= 2 else echo_answer(request)

    backend = ScriptedBackend(answer=odd)
    records = HierarchicalSummarizer(RecordingLLM(backend, MemoryJournal()), SETTINGS).run(chunks)
    chunk4 = next(r for r in records if r.kind == "chunk" and r.idx == 3)
    assert chunk4.attempts == 3 and not chunk4.degraded
    assert not any(r.degraded for r in records)


def test_one_good_first_step_is_enough_to_keep_retries(scandal_text):
    """Only a model that failed every attempt of each first step loses its
    retries: here the first chunk fails and the second answers."""
    chunks = chunks_of(scandal_text)

    def first_fails(request):
        return echo_prompt(request) if step_of(request) in ("1", "3") else echo_answer(request)

    records = HierarchicalSummarizer(RecordingLLM(ScriptedBackend(answer=first_fails), MemoryJournal()),
                                     SETTINGS).run(chunks)
    by_idx = {r.idx: r for r in records if r.kind == "chunk"}
    assert by_idx[0].attempts == 3 and by_idx[0].degraded and by_idx[1].attempts == 1
    assert by_idx[2].attempts == 3 and "one attempt only" not in (by_idx[2].note or "")


def test_a_model_that_answers_after_all_gets_its_retries_back(scandal_text):
    """Failed every attempt of its first steps, then answered update 3 at its
    one attempt: update 4, failing again, gets the full attempts once more.
    (Incremental: each step is a batch of its own. In hierarchical merging the
    chunk summaries after the first are one batch, so there the retries come
    back from the next batch on.)"""
    chunks = chunks_of(scandal_text)

    def recovers(request):
        return echo_answer(request) if step_of(request) == "3" else echo_prompt(request)

    records = IncrementalSummarizer(RecordingLLM(ScriptedBackend(answer=recovers), MemoryJournal()),
                                    SETTINGS).run(chunks)
    updates = [r for r in records if r.kind == "update"]
    assert [r.attempts for r in updates[:4]] == [3, 3, 1, 3]
    assert not updates[2].degraded and updates[3].degraded and "one attempt only" not in updates[3].note
