"""The OpenAI backend through the real `openai` client against llama-cpp-python's
OpenAI-compatible server on 127.0.0.1, and the Anthropic backend against
recorded responses at the HTTP layer."""

import json
import subprocess

import pytest

# The SDKs' own HTTP stack (anthropic and openai ship on httpx2); mocks must use it.
import httpx2 as http
from conftest import excerpt

from pipelines.llm import LLMCallError, LLMConfigError, parse_spec, resolve
from pipelines.llm.anthropic_backend import AnthropicBackend
from pipelines.llm.base import CompletionRequest
from pipelines.llm.openai_backend import OpenAIBackend
from llama_server import free_port


@pytest.fixture(scope="module")
def openai_server():
    from llama_server import llama_server

    with llama_server(n_ctx=4096) as base:
        yield base


@pytest.mark.llm
def test_openai_backend_against_local_server(openai_server, gemma):
    backend = resolve("openai:gemma-270m", base_url=openai_server, context_window=4096)
    assert isinstance(backend, OpenAIBackend)
    request = CompletionRequest(
        messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}),
        max_tokens=12, seed=3,
    )
    completion = backend.complete(request)
    assert completion.input_tokens > 0 and 0 < completion.output_tokens <= 12
    assert completion.finish_reason in ("stop", "length") and completion.latency_s > 0
    # llama-cpp-python's server offers no /tokenize: cl100k with the documented margin, which must
    # never count fewer tokens than the served model's own tokenizer does
    text = "Irène Adler — «the woman»"
    assert backend.count_tokens(text) >= len(gemma.tokenize(text, add_bos=True))
    assert "cl100k" in backend.tokenizer and "no /tokenize" in backend.tokenizer


@pytest.mark.llm
def test_summarize_cli_through_openai_compatible_server(openai_server, tmp_path, scandal_text, cli_env):
    story = tmp_path / "story.txt"
    story.write_text(excerpt(scandal_text, 500), encoding="utf-8")
    db = tmp_path / "api.duckdb"
    cmd = ["summarize", str(story), "--model", "openai:gemma-270m", "--base-url", openai_server,
           "--context-window", "4096", "--chunk-size", "400", "--summary-words", "60", "--db", str(db), "--json", "-q",
           "--concurrency", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=600)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["summary"] and out["usage"]["calls"] >= out["n_chunks"] >= 2 and out["usage"]["cache_hits"] == 0
    second = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=600)
    again = json.loads(second.stdout)
    assert again["usage"]["calls"] == 0 and again["usage"]["cache_hits"] == out["usage"]["calls"]
    assert again["summary"] == out["summary"]


def test_unreachable_base_url_fails_cleanly():
    backend = OpenAIBackend("any-model", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2, max_retries=1)
    with pytest.raises(LLMCallError, match="cannot connect"):
        backend.complete(CompletionRequest(messages=({"role": "user", "content": "hi"},), max_tokens=5))


def test_missing_keys_and_bad_specs(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY is not set"):
        resolve("openai:gpt-4o-mini")
    with pytest.raises(LLMConfigError, match="ANTHROPIC_API_KEY is not set"):
        resolve("anthropic:claude-3-5-haiku-latest")
    for bad in ("gpt-4", "openai", "openai:", "mistral:large", ""):
        with pytest.raises(LLMConfigError):
            parse_spec(bad)
    with pytest.raises(LLMConfigError, match="not found"):
        resolve("llamacpp:/no/such/model.gguf")


# -- Anthropic: recorded Messages API responses at the HTTP layer ------------

RECORDED_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Holmes is hired by the King of Bohemia to recover a photograph."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1480, "output_tokens": 17},
}
RECORDED_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_anthropic_backend_with_recorded_responses(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    seen = []
    responses = [
        http.Response(529, json=RECORDED_OVERLOADED, headers={"retry-after": "0"}),
        http.Response(200, json=RECORDED_MESSAGE),
    ]

    def handler(request):
        seen.append(request)
        return responses.pop(0)

    client = http.Client(transport=http.MockTransport(handler))
    backend = AnthropicBackend("claude-3-5-haiku-latest", max_retries=2, http_client=client)
    request = CompletionRequest(
        messages=(
            {"role": "system", "content": "You summarize."},
            {"role": "user", "content": "<summary>long shared part</summary>"},
            {"role": "user", "content": "Sentence 3?"},
        ),
        max_tokens=100, cache_prefix_messages=2,
    )
    completion = backend.complete(request)
    assert len(seen) == 2  # the SDK retried the 529 by itself
    body = json.loads(seen[-1].content)
    assert body["system"] == [{"type": "text", "text": "You summarize."}]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["messages"][1]["content"][0]
    assert body["max_tokens"] == 100 and body["model"] == "claude-3-5-haiku-latest"
    headers = seen[-1].headers
    assert "sk-ant-test-0123456789abcdef" in headers.get("x-api-key", "") + headers.get("authorization", "")
    assert completion.text.startswith("Holmes is hired")
    assert completion.finish_reason == "stop" and completion.output_tokens == 17
    assert completion.input_tokens == 21 + 1480 and completion.cached_input_tokens == 1480


def test_anthropic_cache_writes_are_recorded_and_priced_as_billed(monkeypatch, store):
    """A call that writes the prompt cache: its tokens land in llm_calls and
    its cost is Anthropic's list price for Claude 3.5 Haiku (USD per million
    tokens: input 0.80, cache write 1.00 = 1.25x, output 4.00)."""
    from prompts import RenderedPrompt

    from pipelines.llm.recording import RecordingLLM
    from pipelines.store import DuckDBJournal

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    written = {**RECORDED_MESSAGE, "usage": {"input_tokens": 21, "cache_creation_input_tokens": 1200,
                                             "cache_read_input_tokens": 0, "output_tokens": 17}}
    client = http.Client(transport=http.MockTransport(lambda request: http.Response(200, json=written)))
    backend = AnthropicBackend("claude-3-5-haiku-latest", max_retries=0, http_client=client)
    prompt = RenderedPrompt("test", "0" * 64, ({"role": "system", "content": "You summarize."},
                                                {"role": "user", "content": "A long shared part."}), 1)
    RecordingLLM(backend, DuckDBJournal(store)).complete(prompt, 100, step="chunk:0")
    ((input_tokens, cached, writes, cost),) = store.execute(
        "SELECT input_tokens, cached_input_tokens, cache_write_tokens, cost_usd FROM llm_calls")
    assert (input_tokens, cached, writes) == (21 + 1200, 0, 1200)
    assert cost == pytest.approx((21 * 0.80 + 1200 * 1.00 + 17 * 4.00) / 1e6)


def test_anthropic_errors_never_leak_the_key(monkeypatch):
    key = "sk-ant-secret-key-that-must-not-leak-42"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)

    def handler(request):
        return http.Response(400, json={"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {key}"}})

    backend = AnthropicBackend("claude-3-5-haiku-latest", max_retries=0, http_client=http.Client(transport=http.MockTransport(handler)))
    with pytest.raises(LLMCallError) as info:
        backend.complete(CompletionRequest(messages=({"role": "user", "content": "x"},), max_tokens=5))
    assert key not in str(info.value) and "HTTP 400" in str(info.value)
