"""One HTTP client, one retry policy (pipelines/llm/http.py): every request
goes through the SDK clients built there, over one pooled connection pool;
transient failures are retried inside one journaled call, other failures
fail at once, and a call that runs out of attempts says why. Token counts
against a server's /tokenize stay cheap."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Flaky

from pipelines.llm.base import CompletionRequest, LLMCallError, LLMConfigError
from pipelines.llm.openai_backend import OpenAIBackend
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from pipelines.llm.tokenizers import ServerTokenizer, cl100k, count_cl100k
from prompts import RenderedPrompt

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "tests" / "data" / "books" / "doyle_scandal_in_bohemia.txt"


def ask(text: str) -> CompletionRequest:
    return CompletionRequest(messages=({"role": "user", "content": f"Summarize in at most 20 words.\n<text>\n{text}\n</text>"},),
                             max_tokens=40)


def prompt(text: str) -> RenderedPrompt:
    return RenderedPrompt("test", "0" * 64, ask(text).messages, 0)


def test_no_module_opens_a_connection_of_its_own():
    """Requests go through pipelines/llm/http.py's clients: no urllib, http.client or bare httpx elsewhere."""
    pattern = re.compile(r"^\s*(import|from)\s+(urllib\.request|urllib3|http\.client|httpx2?|requests|aiohttp)\b", re.M)
    offenders = [str(path.relative_to(ROOT)) for folder in ("pipelines", "flows", "scoring", "prompts")
                 for path in (ROOT / folder).rglob("*.py")
                 if path.name != "http.py" and pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.slow
def test_tokenize_and_chat_survive_resets_and_503s_over_one_pool():
    """A server that resets 15 % of connections and answers 5 % with 503, on
    /tokenize and on chat: every count and every call succeeds, each call is
    journaled once, and the connections stay few (one pool, kept alive)."""
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, flaky=Flaky(seed=3)) as server:
        backend = OpenAIBackend("served", base_url=server.base_url)
        texts = [f"Paragraph {i}: the {i}th guest arrived at Baker Street." for i in range(30)]
        assert [backend.count_tokens(t) for t in texts] == [count_cl100k(t) for t in texts]
        journal = MemoryJournal()
        llm = RecordingLLM(backend, journal)
        answers = [llm.complete(prompt(t), 40).text for t in texts[:10]]
    assert all(answers)
    faulted = {path for _, path in server.injected}
    assert "/tokenize" in faulted and "/v1/chat/completions" in faulted
    assert [r.status for r in journal.records] == ["ok"] * 10  # a retried call is one journaled call
    assert len(server.requests) == 10  # the chat requests that got through: one per call
    assert server.max_open_connections <= 2  # one thread asked: one connection, reused


def test_what_is_not_transient_fails_at_once():
    with FakeOpenAIServer(faults=["401"]) as server:
        backend = OpenAIBackend("served", base_url=server.base_url, max_retries=4)
        with pytest.raises(LLMConfigError, match="401"):
            backend.complete(ask("The cat sat."))
        assert len(server.requests) == 1
    with FakeOpenAIServer(count_tokens=count_cl100k, context_window=64) as server:
        backend = OpenAIBackend("served", base_url=server.base_url, max_retries=4)
        with pytest.raises(LLMCallError) as info:
            backend.complete(ask("The cat sat on the mat. " * 40))
        assert len(server.requests) == 1 and "HTTP 400" in str(info.value) and "maximum context length" in str(info.value)
        assert "attempt" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_a_call_that_runs_out_of_attempts_says_why():
    """Every connection reset: the error names the transport failure, the
    attempts (the first and 2 retries) and the time they took; one line."""
    with FakeOpenAIServer(flaky=Flaky(reset=1.0, unavailable=0.0)) as server:
        backend = OpenAIBackend("served", base_url=server.base_url, max_retries=2)
        with pytest.raises(LLMCallError) as info:
            backend.complete(ask("The cat sat."))
    message = str(info.value)
    assert re.search(r"lost the connection to http://127\.0\.0\.1:\d+/v1: \w+.* \(3 attempts over \d+\.\d s\)$", message), message
    assert len(server.injected) == 3 and "\n" not in message
    with FakeOpenAIServer(flaky=Flaky(reset=0.0, unavailable=1.0)) as server:
        backend = OpenAIBackend("served", base_url=server.base_url, max_retries=1)
        with pytest.raises(LLMCallError, match=r"returned HTTP 503: .*\(2 attempts over \d+\.\d s\)$"):
            backend.complete(ask("The cat sat."))


def test_a_probe_that_fails_after_retries_is_an_error_not_another_tokenizer():
    """A /tokenize that cannot be reached must not silently switch the run to
    the margin estimate (other chunks, other requests): the count fails."""
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, flaky=Flaky(reset=1.0, unavailable=0.0)) as server:
        backend = OpenAIBackend("served", base_url=server.base_url, max_retries=1)
        with pytest.raises(LLMCallError, match=r"/tokenize.*\(2 attempts"):
            backend.count_tokens("The cat sat.")


def _tokenize_requests(server, text: str, chunk_size: int = 2048) -> tuple[int, int]:
    """(/tokenize requests, chunks) of a preflight's and then a run's chunking of `text`, in one process."""
    from pipelines.chunking import chunk_text
    from pipelines.runner import count_tokens_for

    before = server.tokenize_calls
    for _ in range(2):  # the preflight, then the run: each with a backend of its own
        backend = OpenAIBackend("served", base_url=server.base_url)
        chunks = chunk_text(text, chunk_size, count_tokens_for(backend))
        # within budget, and what each chunk costs alone (a chunk counted by position: within a token or two)
        assert all(count_cl100k(c.text) <= c.n_tokens <= min(chunk_size, count_cl100k(c.text) + 2) for c in chunks)
        assert "".join(c.text for c in chunks) == text
    return server.tokenize_calls - before, len(chunks)


def cl100k_pieces(text: str) -> list[bytes]:
    encoding = cl100k()
    return [encoding.decode_single_token_bytes(i) for i in encoding.encode(text, disallowed_special=())]


def test_a_story_needs_a_handful_of_tokenize_requests():
    """A Scandal in Bohemia (46k characters, ~270 paragraphs), chunked by a
    preflight and then a run in one process:
    - a server whose tokenizer runs here (its ids are cl100k's): the probe, once;
    - a server that gives each token's text (as vLLM and llama.cpp's server do):
      the probe and the whole story, its chunks counted by position;
    - a server that gives counts only: the probe, the story, then each chunk."""
    text = STORY.read_text(encoding="utf-8")
    assert len(text) > 40_000
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True,
                          encode=lambda t: cl100k().encode(t, disallowed_special=())) as known:
        assert _tokenize_requests(known, text)[0] == 1
        assert OpenAIBackend("served", base_url=known.base_url).tokenizer_name().endswith("= cl100k_base, counted here")
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, pieces=cl100k_pieces) as spelled:
        assert _tokenize_requests(spelled, text) == (2, 6)
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True) as counts_only:
        requests, chunks = _tokenize_requests(counts_only, text)
    assert chunks == 6 and requests <= 2 + 2 * chunks  # the probe, the story, each chunk (some twice)


def test_a_server_that_tokenizes_at_most_its_context_is_asked_in_parts():
    """vLLM's /tokenize refuses a text longer than the model's context (here 4,096 tokens, the
    story ~11k): the story's token positions come from its halves and quarters, each cut where a
    paragraph ends; a server that gives counts only is calibrated on a shorter start."""
    text = STORY.read_text(encoding="utf-8")
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, pieces=cl100k_pieces, tokenize_max=4096) as spelled:
        requests, chunks = _tokenize_requests(spelled, text)
    assert chunks == 6 and requests <= 1 + 1 + 2 + 4  # the probe, the story, its halves, its quarters
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, tokenize_max=4096) as counts_only:
        requests, chunks = _tokenize_requests(counts_only, text)
    assert chunks == 6


def test_a_story_preflight_and_run_send_at_most_five_tokenize_requests(tmp_path):
    """The whole job, not only chunking: the preflight and a hierarchical run of
    the story against a server whose tokenizer does not run here. The plan
    counts with the local tokenizer scaled to the server's count of the story,
    an answer's count is the server's usage, a prompt far inside the context is
    not counted, a merge's labels are bounded by their bytes."""
    from pipelines.documents import load_document
    from pipelines.plan import estimate_document
    from pipelines.runner import RunConfig, make_backend, summarize_document
    from pipelines.store import Store

    document = load_document(STORY)
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768,
                          pieces=cl100k_pieces) as server:
        config = RunConfig(method="hierarchical", model="openai:served", base_url=server.base_url, context_window=32_768)
        estimate = estimate_document(document, config, make_backend(config))
        result = summarize_document(document, config, Store(tmp_path / "run.duckdb"), backend=make_backend(config))
        assert result.status == "ok" and estimate.chunks == 6
        assert estimate.calls_min <= len(server.requests) <= estimate.calls_max
        assert server.tokenize_calls <= 5


def test_models_with_a_local_tokenizer_send_no_tokenize_request(monkeypatch):
    """The official API's models and the llama.cpp backend count here: no HTTP at all."""
    import socket

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000")
    backend = OpenAIBackend("gpt-4o-mini")

    def refuse(*args, **kwargs):
        raise AssertionError("a token count opened a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert backend.count_tokens(STORY.read_text(encoding="utf-8")[:5000]) > 500


@pytest.mark.parametrize("payload", [
    # llama.cpp's server, with_pieces: a piece that is not valid UTF-8 alone comes as byte values
    {"tokens": [{"id": 1, "piece": "Hello"}, {"id": 2, "piece": " w"}, {"id": 3, "piece": [195]},
                {"id": 4, "piece": [182]}, {"id": 5, "piece": "rld"}]},
    # vLLM, return_token_strs, a SentencePiece vocabulary (its dummy prefix, byte fallback)
    {"count": 5, "tokens": [1, 2, 3, 4, 5], "token_strs": ["▁Hello", "▁w", "<0xC3>", "<0xB6>", "rld"]},
    # vLLM, a byte-level BPE vocabulary ("Ġ" is the space, "Ã¶" the two bytes of ö)
    {"count": 4, "tokens": [1, 2, 3, 4], "token_strs": ["Hello", "Ġw", "Ã¶", "rld"]},
])
def test_token_positions_are_read_from_each_servers_pieces(payload):
    from pipelines.llm.tokenizers import _pieces_of, _starts_from_pieces

    starts = _starts_from_pieces("Hello wörld", _pieces_of(payload))
    assert starts == ([0, 5, 7, 8] if len(payload.get("tokens")) == 4 else [0, 5, 7, 7, 8])


def test_pieces_that_do_not_spell_the_text_give_no_positions():
    from pipelines.llm.tokenizers import _pieces_of, _starts_from_pieces

    assert _starts_from_pieces("Hello world", _pieces_of({"token_strs": ["Hello", "Ġwor"]})) is None
    assert _starts_from_pieces("Hello world", _pieces_of({"tokens": [7, 8]})) is None  # ids only
