"""The preflight is the workflow (issue 25, item 1).

Property: for random real excerpts and random settings, a real run (the
steps `summarize_document` makes, against a scripted backend that answers
with random lengths -- at the limit, one word, anything between, as long as
the workflow keeps, now and then an answer the workflow refuses) makes calls
and spends tokens within the preflight's bounds. And because the preflight
runs the workflows' own code, changing a workflow's rule moves the preflight
with it: there is no copy to forget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re

import pytest
from conftest import BOOKS, excerpt
from scripted import ScriptedBackend

from pipelines.documents import Document
from pipelines.llm.base import LLMConfigError, PromptTooLongError

CASES = 80  # random documents x settings; seeded, so every run draws the same ones
SEED = 25
SCOPE_SHARE = 0.1  # of the cases compress with SCOPE first (its embedding model costs seconds)
GREEDY_SHARE = 0.25  # of the cases answer as long as the workflow keeps (see random_answer)
GROUNDED_SHARE = 0.2  # of the cases ground their merges or updates in passages (drawn apart: the rest stay as drawn)
TEXTS = ("austen_persuasion.txt", "austen_prideprejudice.txt", "doyle_red_headed_league.txt",
         "doyle_scandal_in_bohemia.txt")
_FENCED = re.compile(r"<(?:excerpt|summaries|summary|text)>\n(.*?)\n</", re.S)


def random_answer(seed: str, attempts: int = 1, greedy: bool = False):
    """Answers of random length, decided by the request (so a retry, whose prompt differs, may
    draw another): a fifth at the request's max_tokens, a fifth one word, most anything between,
    and one in twelve an answer the workflows refuse (cut off mid-sentence, or looping), but
    never at the last of `attempts` (the request's seed is its attempt): the retries are
    exercised, the fallback after the last is not (its text is cut to the step's token limit
    whatever it selects). `greedy`: every answer instead as long as the workflow keeps it (an
    incremental update just within the tolerance over its budget that would have it compressed):
    the longest running summaries, each the next update's input. The words come from the
    prompt's own material (so SCOPE's keywords may survive), in sentences."""
    from scripted import words_asked

    from pipelines.summarize.common import tokens_for_words
    from pipelines.summarize.incremental import BUDGET_TOLERANCE

    def answer(request) -> str:
        content = "\n".join(m["content"] for m in request.messages)
        rng = random.Random(hashlib.sha256((seed + content).encode()).digest())
        blocks = _FENCED.findall(request.messages[-1]["content"])
        words = [w.strip(".!?\"'`“”‘’,;:()[]<>") for w in (blocks[-1] if blocks else content).split()]
        words = [w for w in words if w] or ["Nothing"]
        limit = request.max_tokens
        draw = rng.random()
        # refused (never at the last attempt): no sentence end, or one sentence over and over
        if draw < 1 / 12 and (request.seed or 0) + 1 < attempts:
            return (" ".join(words[:limit + 5]) if rng.random() < 0.5
                    else " ".join(["The same words come back again."] * max(3, limit // 6)))
        n = limit if draw < 0.3 else 1 if draw < 0.5 else rng.randint(1, limit)
        if greedy:
            n = min(limit, int(BUDGET_TOLERANCE * tokens_for_words(words_asked(request))))
        start = rng.randrange(max(1, len(words) - n))
        picked = words[start:start + n]
        picked += [f"word{k}" for k in range(n - len(picked))]  # material shorter than the answer: never a loop
        return " ".join(" ".join(picked[i:i + 8]).capitalize() + "." for i in range(0, n, 8))

    return answer


def random_case(rng: random.Random, i: int):
    """A document (a random stretch of a real book) and a configuration that fits its context."""
    from pipelines.runner import RunConfig

    text = (BOOKS / rng.choice(TEXTS)).read_text(encoding="utf-8")
    start = text.find("\n\n", rng.randrange(len(text) // 2)) + 2
    compress = "scope" if rng.random() < SCOPE_SHARE else "none"
    words = rng.randint(150, 700 if compress == "scope" else 2500)
    document = Document(path=f"case-{i}.txt", text=excerpt(text[start:], words), kind="book", encoding="utf-8")
    config = RunConfig(
        method=rng.choice(["hierarchical", "incremental"]), model="scripted",
        chunk_size=rng.choice([128, 192, 256, 384, 512, 768]), summary_words=rng.choice([12, 25, 40, 70, 120, 200]),
        max_attempts=rng.choice([1, 2, 3]), compress=compress, compress_ratio=rng.choice([0.3, 0.5, 0.7]))
    if random.Random(f"grounded-{i}").random() < GROUNDED_SHARE:
        config = dataclasses.replace(config, grounded=True)
    # Windows from barely enough for a chunk, its answer and a running summary (many merges) to roomy.
    window = config.chunk_size + 3 * config.summary_words + rng.choice([300, 350, 450, 600, 900, 1500, 3000, 8000])
    answer = random_answer(f"{SEED}-{i}", config.max_attempts, greedy=rng.random() < GREEDY_SHARE)
    return document, config, ScriptedBackend(answer, context_window=window, model=f"case-{i}")


def real_run(document, config, backend):
    """The usage of a run's own steps, made as `summarize_document` makes them (its chunks, its
    compression, its workflow, on its executor), with the journal in memory instead of a store
    (a store's writes cost tens of milliseconds each; `test_the_real_run_is_summarize_document`
    checks that the two agree)."""
    from pipelines.compress.chunk_compression import ChunkCompressor
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.runner import count_tokens_for, make_chunks, step_width, summarizer_for
    from pipelines.summarize.common import Progress
    from pipelines.summarize.executors import ThreadExecutor

    llm = RecordingLLM(backend, MemoryJournal())
    chunks = make_chunks(document, config, count_tokens_for(backend))
    executor = ThreadExecutor(step_width(config, backend))
    if config.compress != "none":
        compressor = ChunkCompressor(llm, method=config.compress, ratio=config.compress_ratio, kind=document.kind,
                                     language=document.language, query=config.compress_query)
        chunks = [chunk for chunk, _ in compressor.run(chunks, executor)]
    summarizer_for(config, llm, document.kind, Progress()).run(chunks, executor)
    return llm.usage


def bounds_hold(document, config, backend) -> tuple[str, object, object]:
    """('ok', estimate, usage) when the real run is within the estimate; ('refused', error, None)
    when the preflight refused the run: the workflow cannot make its worst case (every answer at
    its limit) in this context, so no bound can be given (the run itself may fail, or be lucky)."""
    from pipelines.plan import estimate_document

    try:
        estimate = estimate_document(document, config, backend)
    except PromptTooLongError as exc:
        return "refused", exc, None
    usage = real_run(document, config, backend)
    where = f"{document.path} {config} window {backend.context_window}"
    assert estimate.calls_min <= usage.calls <= estimate.calls_max, (where, usage, estimate)
    assert estimate.input_min <= usage.input_tokens <= estimate.input_max, (where, usage, estimate)
    assert usage.output_tokens <= estimate.output_max, (where, usage, estimate)
    return "ok", estimate, usage


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pipelines.store import Store

    return Store(tmp_path_factory.mktemp("property") / "runs.duckdb")


@pytest.mark.slow
def test_the_real_run_is_summarize_document(store):
    """`real_run` spends what `summarize_document` spends, with and without SCOPE."""
    from pipelines.runner import RunConfig, summarize_document

    text = (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    document = Document(path="scandal.txt", text=excerpt(text, 500), kind="book", encoding="utf-8")
    for method, compress in (("hierarchical", "scope"), ("incremental", "none")):
        config = RunConfig(method=method, model="scripted", chunk_size=192, summary_words=40, max_attempts=2,
                           compress=compress)
        answer = random_answer(method, config.max_attempts)
        usage = real_run(document, config, ScriptedBackend(answer, context_window=4096, model=f"{method}-1"))
        run = summarize_document(document, config, store,
                                 backend=ScriptedBackend(answer, context_window=4096, model=f"{method}-2")).usage
        assert (usage.calls, usage.input_tokens, usage.output_tokens) == (run.calls, run.input_tokens,
                                                                           run.output_tokens)
        assert usage.calls > 1


@pytest.mark.slow
def test_a_real_run_stays_within_the_preflight_for_random_documents_and_settings():
    from pipelines.runner import check_budgets

    rng = random.Random(SEED)
    seen, i = [], 0
    while len(seen) < CASES:
        document, config, backend = random_case(rng, i)
        i += 1
        try:
            check_budgets(config, backend)
        except LLMConfigError:  # the CLI refuses these settings before planning or running
            continue
        outcome, estimate, usage = bounds_hold(document, config, backend)
        merges = (outcome == "ok" and config.method == "hierarchical"
                  and estimate.calls_max > config.max_attempts * (estimate.chunks + estimate.levels - 1))
        seen.append((config.method, config.compress, outcome, merges,
                     outcome == "ok" and usage.calls == estimate.calls_max, config.grounded and merges, config.grounded))
    # The draw covers what it should: both methods, SCOPE, levels of more than one merge, and
    # runs that made every call the preflight allowed (the bounds are reached, not just respected).
    ok = [case for case in seen if case[2] == "ok"]
    # The workflows make their worst case; grounded merges may not fit the smallest windows at all
    # (the passages take their share of every merge): the preflight refuses those, as the run would.
    assert len([case for case in ok if not case[6]]) == len([case for case in seen if not case[6]]), \
        [case for case in seen if case[2] != "ok"]
    assert {case[0] for case in ok} == {"hierarchical", "incremental"}
    assert any(case[1] == "scope" for case in ok)
    assert sum(case[3] for case in ok) >= 5 and sum(case[4] for case in ok) >= 5
    assert sum(case[5] for case in ok) >= 2  # grounded merges, their passages counted by the same code
    # Grounded updates take only the room the summary and the new part leave, so they always fit.
    assert [case for case in seen if case[0] == "incremental" and case[6]] == \
        [case for case in ok if case[0] == "incremental" and case[6]] != []


def _runs_with(monkeypatch, owner, name, rule, document, config, backend):
    """The preflight before and after a workflow's rule is replaced, and the real run after."""
    from pipelines.plan import estimate_document

    before = estimate_document(document, config, backend)
    monkeypatch.setattr(owner, name, rule)
    after = estimate_document(document, config, backend)
    return before, after, real_run(document, config, backend)


def test_a_changed_packing_rule_moves_the_preflight_with_it(monkeypatch):
    """HierarchicalSummarizer.group packs as many summaries as fit into each merge; packing two
    at a time instead makes a deeper tree. The preflight, which runs `group` itself, follows:
    the real run makes more calls than the old rule's preflight allowed, and stays within the new one's."""
    from pipelines.runner import RunConfig
    from pipelines.summarize.hierarchical import HierarchicalSummarizer

    text = (BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    document = Document(path="league.txt", text=excerpt(text, 2500), kind="book", encoding="utf-8")
    config = RunConfig(method="hierarchical", model="scripted", chunk_size=256, summary_words=40, max_attempts=1)
    backend = ScriptedBackend(random_answer("packing"), context_window=8192, model="packing")

    def two_at_a_time(self, below, out_limit):
        return [below[i:i + 2] for i in range(0, len(below), 2)]

    before, after, usage = _runs_with(monkeypatch, HierarchicalSummarizer, "group", two_at_a_time, document, config,
                                      backend)
    assert before.levels == 2 and after.levels > before.levels
    assert usage.calls > before.calls_max  # a preflight that kept the old rule would be wrong
    assert after.calls_min <= usage.calls <= after.calls_max
    assert after.input_min <= usage.input_tokens <= after.input_max and usage.output_tokens <= after.output_max


def test_a_changed_update_rule_moves_the_preflight_with_it(monkeypatch):
    """IncrementalSummarizer compresses the running summary before an update that would not fit
    its context; a rule that always compresses first adds a call to every update. The preflight
    follows it as it follows the packing."""
    from pipelines.runner import RunConfig
    from pipelines.summarize.incremental import IncrementalSummarizer

    text = (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    document = Document(path="scandal.txt", text=excerpt(text, 1500), kind="book", encoding="utf-8")
    config = RunConfig(method="incremental", model="scripted", chunk_size=256, summary_words=60, max_attempts=1)
    backend = ScriptedBackend(random_answer("updates"), context_window=8192, model="updates")

    before, after, usage = _runs_with(monkeypatch, IncrementalSummarizer, "_update_fits",
                                      lambda self, summary, text, limit: False, document, config, backend)
    assert after.calls_min > before.calls_min  # every update after the first now compresses first
    assert usage.calls > before.calls_max
    assert after.calls_min <= usage.calls <= after.calls_max
    assert after.input_min <= usage.input_tokens <= after.input_max and usage.output_tokens <= after.output_max


def test_the_upper_plan_goes_on_from_the_longest_running_summary_the_workflow_keeps():
    """An incremental update at its limit is compressed, so the longest answers do not leave the
    longest running summary: an update just within the tolerance is kept as it is, and is longer.
    The upper plan goes on from the longest the workflow keeps, step by step: every update's
    input is at least as long as in a run whose every update is as long as the workflow keeps."""
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.plan import PlanningBackend, _summarize
    from pipelines.runner import RunConfig, summarizer_for
    from pipelines.summarize.common import Progress
    from pipelines.summarize.incremental import current_summary

    text = (BOOKS / "austen_persuasion.txt").read_text(encoding="utf-8")
    document = Document(path="persuasion.txt", text=excerpt(text[20_000:], 2500), kind="book", encoding="utf-8")
    config = RunConfig(method="incremental", model="scripted", chunk_size=256, summary_words=200, max_attempts=1)
    backend = ScriptedBackend(random_answer("greedy", greedy=True), context_window=8192, model="greedy")
    chunks = _chunks(document, config, backend)
    plan_backend, planned = _summarize(PlanningBackend(backend, "longest"), config, document, chunks, replay=False)
    real = summarizer_for(config, RecordingLLM(backend, MemoryJournal()), "book", Progress()).run(chunks)

    def running(records):  # the running summary after each chunk, in tokens
        return [current_summary([r for r in records if r.idx == j]).n_tokens for j in range(len(chunks))]

    assert len(plan_backend.calls) > len(chunks)  # the plan's updates at their limit are compressed ...
    assert not any(r.kind == "compress" for r in real)  # ... the greedy run's are kept as they are
    assert all(p >= r for p, r in zip(running(planned), running(real))), (running(planned), running(real))


def _chunks(document, config, backend):
    from pipelines.runner import count_tokens_for, make_chunks

    return make_chunks(document, config, count_tokens_for(backend))
