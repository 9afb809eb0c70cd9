"""Both workflows end to end through the real embedded model (llama.cpp).

The model is a tiny base model: these tests check structure, budgets and
bookkeeping, never the quality of the prose."""

import pytest
from conftest import excerpt

from pipelines.llm.llamacpp import LlamaCppBackend
from pipelines.runner import RunConfig, summarize_file

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def small_window(gemma):
    # Same loaded model as `gemma`, budgets computed for a 768-token window.
    return LlamaCppBackend("gemma-3-270m", context_window=768)


def _opening(tmp_path_factory, text: str, words: int):
    path = tmp_path_factory.mktemp("story") / "scandal_excerpt.txt"
    path.write_text(excerpt(text, words), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def story(tmp_path_factory, scandal_text):
    # 12 chunks: in a 640-token window their summaries overflow one merge by far (8 of them filled
    # it here), so a third level. 1,400 words' 15 chunks in 768 tokens took 93 s on one core, these 75 s.
    return _opening(tmp_path_factory, scandal_text, 1100)


@pytest.fixture(scope="module")
def short_story(tmp_path_factory, scandal_text):
    # 6 chunks, so 6 updates, whatever the model answers (1,400 words' 10 took the test 39 s, these 11 s).
    return _opening(tmp_path_factory, scandal_text, 800)


def _rows(store, sql, *params):
    return store.execute(sql, list(params))


def test_hierarchical_real_model_three_levels(story, gemma, store):
    # Two attempts a step: the embedded model's answers are mostly degenerate, and retries are tested elsewhere.
    config = RunConfig(method="hierarchical", chunk_size=160, summary_words=60, context_window=640, max_attempts=2)
    backend = LlamaCppBackend("gemma-3-270m", context_window=640)  # the loaded model, budgets for 640 tokens
    result = summarize_file(story, config, store, backend=backend)
    records = result.records
    levels = sorted({r.level for r in records})
    assert len(levels) >= 3, f"expected at least 3 levels, got {levels}"
    assert result.n_chunks == len([r for r in records if r.level == 0])
    for r in records:
        assert r.text, r
        assert r.n_tokens <= r.token_limit + 2, r  # re-tokenizing stripped text may differ by a token
    top = [r for r in records if r.is_final]
    assert len(top) == 1 and top[0].token_limit == config.settings().summary_tokens
    assert result.summary == top[0].text

    (run,) = _rows(store, "SELECT status, n_chunks, n_summaries, llm_calls, cache_hits, input_tokens, output_tokens, final_summary FROM runs WHERE run_id = ?", result.run_id)
    assert run[0] in ("ok", "degraded") and run[1] == result.n_chunks and run[2] == len(records)
    assert run[3] == result.usage.calls >= len(records) and run[4] == 0 and run[5] > 0 and run[6] > 0
    assert run[7] == result.summary
    (n_calls,) = _rows(store, "SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND status = 'ok'", result.run_id)[0]
    assert n_calls == result.usage.calls
    (chunks_joined,) = _rows(store, "SELECT string_agg(text, '' ORDER BY idx) FROM chunks WHERE run_id = ?", result.run_id)[0]
    assert chunks_joined == story.read_text(encoding="utf-8")

    # The same command again replays every call from the store: zero new calls.
    again = summarize_file(story, config, store, backend=backend)
    assert again.usage.calls == 0 and again.usage.cache_hits == result.usage.calls
    assert again.summary == result.summary


def test_incremental_real_model(short_story, small_window, store):
    config = RunConfig(method="incremental", chunk_size=240, summary_words=60, context_window=768, max_attempts=2)
    result = summarize_file(short_story, config, store, backend=small_window)
    updates = [r for r in result.records if r.kind == "update"]
    assert len(updates) == result.n_chunks >= 4
    word_limits = [r.word_limit for r in updates]
    assert word_limits == sorted(word_limits) and word_limits[-1] == 60
    final = [r for r in result.records if r.is_final]
    assert len(final) == 1 and final[0].n_tokens <= config.settings().summary_tokens + 2
    kinds = {row[0] for row in _rows(store, "SELECT DISTINCT kind FROM summaries WHERE run_id = ?", result.run_id)}
    assert "update" in kinds
    steps = [row[0] for row in _rows(store, "SELECT step FROM llm_calls WHERE run_id = ? ORDER BY created_at", result.run_id)]
    assert steps[0].startswith("update:0") and any(s.startswith(f"update:{result.n_chunks - 1}") for s in steps)


def test_prefix_reuse_is_reported(gemma):
    from pipelines.llm.base import CompletionRequest

    shared = {"role": "user", "content": "Read this carefully. " * 60}
    first = gemma.complete(CompletionRequest(messages=(shared, {"role": "user", "content": "One?"}), max_tokens=4))
    second = gemma.complete(CompletionRequest(messages=(shared, {"role": "user", "content": "Two?"}), max_tokens=4))
    assert second.cached_input_tokens >= 0.8 * first.input_tokens
    cold = LlamaCppBackend("gemma-3-270m", reuse_prefix=False)
    third = cold.complete(CompletionRequest(messages=(shared, {"role": "user", "content": "Three?"}), max_tokens=4))
    assert third.cached_input_tokens == 0


def test_degenerate_generation_stops_early_and_the_step_degrades_or_recovers(gemma, scandal_text):
    """The embedded model copies a summary prompt back; the watch ends that
    answer a few tokens in instead of at max_tokens, and the step retries."""
    import prompts
    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.summarize.common import Generation, SummarizeSettings
    from pipelines.summarize.degeneration import Watch, detect, instructions_of

    values = dict(system=prompts.snippet("system_summarizer"), focus=prompts.snippet("focus_book"), kind="book",
                  position="part 1 of 6", text=excerpt(scandal_text, 150))
    prompt = prompts.render("chunk_summary", words=60, **values)
    max_tokens = 120
    watched = gemma.complete(CompletionRequest(messages=prompt.messages, max_tokens=max_tokens,
                                               watch=Watch.for_prompt(prompt.messages)))
    assert watched.finish_reason == "degenerate" and 0 < watched.output_tokens <= max_tokens // 4
    unwatched = gemma.complete(CompletionRequest(messages=prompt.messages, max_tokens=max_tokens))
    assert unwatched.finish_reason == "length" and unwatched.text.startswith(watched.text)

    llm = RecordingLLM(gemma, MemoryJournal(), run_id="guard")
    outcome = Generation(llm, SummarizeSettings(max_attempts=2)).run(
        "chunk_summary", values, token_limit=max_tokens, word_limit=60, step="chunk:0",
        fallback=lambda words: "Holmes admires Irene Adler.",
    )
    calls = llm.journal.records
    assert calls[0].finish_reason == "degenerate" and calls[0].output_tokens <= max_tokens // 4
    if outcome.degraded:
        assert "degenerate answer" in outcome.note and outcome.text == "Holmes admires Irene Adler."
    else:
        assert detect(outcome.text, instructions_of(prompt.messages)) is None


def test_a_repeat_penalty_reaches_back_over_the_whole_answer(gemma, scandal_text):
    """A retry's repeat penalty must see a loop whose period is longer than
    llama.cpp's default 64-token window: asked to copy a 70-word paragraph
    (81 tokens) over and over, the tiny model repeats it verbatim, and
    with the penalty it stops repeating (with a 64-token window its answer
    still loops: 48 % of its 4-word sequences repeated, measured)."""
    from pipelines.llm.base import CompletionRequest
    from pipelines.summarize.degeneration import MAX_REPEATED_NGRAM_SHARE, repeated_ngram_share

    paragraph = " ".join(scandal_text.split()[200:270])
    messages = ({"role": "user", "content": f"Repeat this paragraph five times, one copy per line:\n\n{paragraph}"},)
    plain = gemma.complete(CompletionRequest(messages=messages, max_tokens=170))
    penalised = gemma.complete(CompletionRequest(messages=messages, max_tokens=170, repeat_penalty=0.3))
    assert repeated_ngram_share(plain.text)[0] > 0.8  # the prompt does make it loop
    share, grams = repeated_ngram_share(penalised.text)
    assert grams >= 100 and share < MAX_REPEATED_NGRAM_SHARE


def test_every_thread_drives_the_model_on_one_compute_thread(gemma, monkeypatch):
    """Calls from the main thread, a worker pool and a fresh thread all run
    llama.cpp on the one compute thread (ggml's OpenMP team stays with the
    thread that first drove the model; from any other thread, generation here
    was 1.6x slower per token), and each caller gets its own answer back."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.logprobs import default_scorer

    llama, _ = gemma._loaded
    ran_on = []
    produced = {}  # prompt -> the answer llama.cpp generated for it, on whichever thread
    real = llama.create_chat_completion

    def noting_the_thread(*args, **kwargs):
        ran_on.append(threading.current_thread().name)
        result = real(*args, **kwargs)
        produced[kwargs["messages"][-1]["content"]] = result["choices"][0]["message"]["content"].strip()
        return result

    monkeypatch.setattr(llama, "create_chat_completion", noting_the_thread)

    def prompt(n: int) -> str:
        return f"Count from {n} to {n + 3}."

    def ask(n: int) -> str:
        request = CompletionRequest(messages=({"role": "user", "content": prompt(n)},), max_tokens=8, temperature=0.0)
        return gemma.complete(request).text

    answers = [ask(1)]
    with ThreadPoolExecutor(2) as pool:
        answers += list(pool.map(ask, [2, 3]))
    fresh = threading.Thread(target=lambda: answers.append(ask(4)))
    fresh.start()
    fresh.join()
    assert ran_on == ["llama.cpp"] * 4
    # Each caller got the answer generated for its own prompt (pool.map keeps the callers' order). Not
    # compared with asking again: a prompt evaluated partly from the KV cache may tip the 270M model's
    # greedy choice.
    assert len(set(answers)) > 1, answers  # answers that differ, so a mix-up would show
    assert answers == [produced[prompt(n)] for n in (1, 2, 3, 4)], (answers, produced)

    scorer = default_scorer()
    decoded_on = []
    ctx = scorer._llama._ctx
    real_decode = ctx.decode
    monkeypatch.setattr(ctx, "decode", lambda batch: (decoded_on.append(threading.current_thread().name),
                                                      real_decode(batch))[1])
    with ThreadPoolExecutor(1) as pool:
        pool.submit(scorer.perplexity, "def f(x): return x", "").result()
    assert decoded_on and set(decoded_on) == {"llama.cpp"}
