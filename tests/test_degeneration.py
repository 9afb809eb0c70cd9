"""The degeneration guard: repetition, loops and prompt echo.

Pure checks on real text: released human and GPT-4/ChatGPT summaries must
pass, the embedded model's real answers (a captured fixture) must not, and
the live model must stop at the loop instead of at max_tokens."""

import json
from pathlib import Path

import pytest

import prompts
from pipelines.text import sentences
from pipelines.summarize.degeneration import (
    ECHO_WORDS,
    MAX_REPEATED_NGRAM_SHARE,
    Watch,
    detect,
    instructions_of,
    repeated_ngram_share,
)

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "degenerate" / "gemma270m_chunk_summary.json"


PROMPT_VALUES = dict(
    system=prompts.snippet("system_summarizer"), focus=prompts.snippet("focus_book"), kind="book",
    position="part 1 of 7", words=400, words_now=500, text="T", summaries="S", summary="S", context="C",
)


def all_instructions() -> str:
    """The instructions of every summarizing prompt, as the guard sees them."""
    names = ("chunk_summary", "merge", "merge_with_context", "incremental_start", "incremental_update",
             "incremental_compress")
    return "\n".join(instructions_of(prompts.render(name, **PROMPT_VALUES).messages) for name in names)


def real_summaries() -> list[tuple[str, str]]:
    """300 released book summaries (GPT-4, ChatGPT; BooookScore) and 12 human plot summaries (SQuALITY)."""
    out = []
    for path in sorted((DATA / "booookscore").glob("*.json")):
        for book, by_sentence in json.loads(path.read_text(encoding="utf-8")).items():
            ordered = sorted(by_sentence.values(), key=lambda s: s["sentence_num"])
            out.append((f"{path.stem}/{book}", " ".join(s["sentence"] for s in ordered)))
    for line in (DATA / "squality" / "dev_subset.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for response in row["questions"][0]["responses"]:
            out.append((f"squality/{row['metadata']['passage_id']}", response["response_text"]))
    return out


def test_real_summaries_are_not_degenerate():
    instructions = all_instructions()
    summaries = real_summaries()
    assert len(summaries) == 312
    flagged = [(name, str(found)) for name, text in summaries if (found := detect(text, instructions))]
    assert flagged == []
    # Nor do they contain the stop sequences the API backends are given (where a copy of a prompt begins).
    stops = {stop.lower() for name in ("chunk_summary", "merge", "incremental_update")
             for stop in Watch.for_prompt(prompts.render(name, **PROMPT_VALUES).messages).stop_sequences}
    assert not [name for name, text in summaries if any(stop in text.lower() for stop in stops)]
    # The margin: the most repetitive of them (a ChatGPT summary) is well under the loop threshold.
    assert max(repeated_ngram_share(text)[0] for _, text in summaries) < MAX_REPEATED_NGRAM_SHARE * 0.75


def test_a_sentence_three_times_is_repetition_twice_is_not():
    summaries = dict(real_summaries())
    text = summaries["gpt4-2048-hier-cleaned/a-heart-that-works.epub"]
    sentence = "Rob struggles to cope with the loss of his son Henry."
    assert detect(f"{text} {sentence} {sentence}") is None
    found = detect(f"{text} {sentence} {sentence} {sentence}")
    assert found is not None and found.kind == "repetition" and "3 times" in found.detail
    # Lines count too, with or without a full stop, whatever the case and spacing.
    lines = "\n".join(["Holmes and the King of Bohemia", "holmes and  the King of Bohemia", "Holmes and the king of bohemia"])
    assert detect(lines).kind == "repetition"


def test_a_loop_without_sentence_ends_is_caught_by_repeated_ngrams():
    loop = "and the photograph was in the house of Irene Adler who " * 4
    found = detect("The King came to Baker Street " + loop)
    assert found is not None and found.kind == "loop"
    assert detect("The King came to Baker Street and asked for help") is None  # too short to judge


def test_prompt_echo_is_caught_but_copying_the_material_is_not():
    rendered = prompts.render(
        "chunk_summary", system=prompts.snippet("system_summarizer"), focus=prompts.snippet("focus_book"),
        kind="book", position="part 1 of 3", words=60,
        text="To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name.",
    )
    instructions = instructions_of(rendered.messages)
    assert "always the woman" not in instructions and "careful summarizer" in instructions
    echo = "You are a careful summarizer of long documents. You read one part at a time. Holmes admires her."
    found = detect(echo, instructions)
    assert found is not None and found.kind == "prompt echo" and "careful summarizer" in found.detail
    # An extractive answer quotes the excerpt: that is not an echo of the instructions.
    quote = "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name."
    assert detect(quote, instructions) is None
    # Seven words in common are a phrase; eight in a row are an echo.
    seven = " ".join(instructions.split()[1:8])  # "are a careful summarizer of long documents."
    assert detect(f"Holmes, they said, {seven} He left.", instructions) is None
    eight = " ".join(instructions.split()[1:9])
    assert detect(f"Holmes, they said, {eight} He left.", instructions).kind == "prompt echo"


def test_watch_fires_at_the_third_copy_not_before():
    watch = Watch()
    sentence = "The King of Bohemia asks Holmes for help. "
    assert watch("Holmes sits by the fire. " + sentence * 2) is None
    assert watch("Holmes sits by the fire. " + sentence * 2 + "The King of Bohemia asks") is None  # partial third copy
    reason = watch("Holmes sits by the fire. " + sentence * 3)
    assert reason is not None and reason.startswith("repetition")
    assert Watch.name and Watch.name == Watch("x y z").name  # the instructions are not part of the identity


def test_cli_prints_one_warning_naming_the_model(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from scripted import ScriptedBackend

    import pipelines.runner
    from pipelines.cli import cli

    def loops(request):
        return "Holmes sits by the fire. " + "The King of Bohemia asks Holmes for help. " * 12

    monkeypatch.setattr(pipelines.runner, "make_backend", lambda config: ScriptedBackend(loops, model="looper-1b"))
    story = tmp_path / "story.txt"
    story.write_text("Holmes waited. Watson read the paper. The client arrived late.\n", encoding="utf-8")
    out = CliRunner().invoke(cli, ["run", str(story), "--model", "openai:looper-1b", "--summary-words", "40",
                                   "--db", str(tmp_path / "t.duckdb")])
    assert out.exit_code == 0, out.output
    # the salvage: an extractive selection of the input (at most half of it), never the looping answer
    kept = out.stdout.strip()
    assert kept and set(sentences(kept)) < {"Holmes waited.", "Watson read the paper.", "The client arrived late."}
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "scripted:looper-1b" in warnings[0] and "1 of 1 steps" in warnings[0] and "degraded" in warnings[0]
    assert "repetition" in warnings[0]


def test_the_embedded_models_real_answer_is_caught_at_its_start():
    """The captured answer copies the prompt back (system prompt, then the
    excerpt) until max_tokens; the watch would have stopped it a few words in."""
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    messages, answer = fixture["request"]["messages"], fixture["answer"]
    assert fixture["finish_reason"] == "length" and fixture["output_tokens"] == fixture["request"]["max_tokens"]
    found = detect(answer, instructions_of(messages))
    assert found is not None and found.kind == "prompt echo"
    assert detect(answer) is None  # no loop in this one: only the echo check catches it

    watch = Watch.for_prompt(messages)
    answer_words = answer.split(" ")
    stopped_at = next(n for n in range(1, len(answer_words) + 1) if watch(" ".join(answer_words[:n])))
    assert stopped_at <= ECHO_WORDS + 2 < len(answer_words) / 10
    # The API backends' stop sequences cut the same answer at its first character.
    assert any(answer.startswith(stop) for stop in watch.stop_sequences)


def chunk_prompt():
    return prompts.render(
        "chunk_summary", system=prompts.snippet("system_summarizer"), focus=prompts.snippet("focus_book"),
        kind="book", position="part 1 of 3", words=60, text="To Sherlock Holmes she is always the woman.",
    )


def test_openai_requests_carry_the_watchs_stop_sequences_and_the_repeat_penalty(fake_openai):
    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.openai_backend import OpenAIBackend

    prompt = chunk_prompt()
    watch = Watch.for_prompt(prompt.messages)
    assert watch.stop_sequences == ("You are a careful summarizer of", "Here is one part of a", "<excerpt>")
    backend = OpenAIBackend("fake", base_url=fake_openai.base_url)
    backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=50))
    backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=50, watch=watch, repeat_penalty=0.3))
    plain, guarded = (r["body"] for r in fake_openai.requests)
    assert "stop" not in plain and "frequency_penalty" not in plain
    assert guarded["stop"] == list(watch.stop_sequences) and guarded["frequency_penalty"] == 0.3


def test_anthropic_reports_a_stop_at_an_echo_as_degenerate(monkeypatch):
    import httpx2 as http

    from pipelines.llm.anthropic_backend import AnthropicBackend
    from pipelines.llm.base import CompletionRequest

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    prompt = chunk_prompt()
    watch = Watch.for_prompt(prompt.messages)
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        # What the Messages API answers when the model starts to copy the system prompt back.
        return http.Response(200, json={
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": ""}], "stop_reason": "stop_sequence",
            "stop_sequence": "You are a careful summarizer of",
            "usage": {"input_tokens": 310, "output_tokens": 6},
        })

    backend = AnthropicBackend("claude-3-5-haiku-latest", http_client=http.Client(transport=http.MockTransport(handler)))
    completion = backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=100, watch=watch))
    assert seen[0]["stop_sequences"] == list(watch.stop_sequences)
    assert completion.finish_reason == "degenerate" and completion.text == ""
    # A stop sequence the caller asked for is an ordinary stop.
    completion = backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=100,
                                                    stop=("You are a careful summarizer of",)))
    assert completion.finish_reason == "stop"


@pytest.fixture(scope="module")
def gemma_server():
    from llama_server import llama_server

    with llama_server(n_ctx=2048) as base:
        yield base


@pytest.mark.llm
def test_openai_compatible_server_stops_at_the_echo(gemma_server, scandal_text):
    """Through a real OpenAI-compatible server the watch acts by its stop
    sequences: the embedded model's copy of the prompt ends at its first words."""
    from conftest import excerpt

    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.openai_backend import OpenAIBackend

    prompt = prompts.render(
        "chunk_summary", system=prompts.snippet("system_summarizer"), focus=prompts.snippet("focus_book"),
        kind="book", position="part 1 of 6", words=60, text=excerpt(scandal_text, 150),
    )
    backend = OpenAIBackend("gemma-270m", base_url=gemma_server, context_window=2048)
    unwatched = backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=120))
    assert unwatched.output_tokens == 120 and detect(unwatched.text, instructions_of(prompt.messages))
    watched = backend.complete(CompletionRequest(messages=prompt.messages, max_tokens=120,
                                                 watch=Watch.for_prompt(prompt.messages)))
    assert watched.output_tokens <= 12 and detect(watched.text, instructions_of(prompt.messages)) is None
