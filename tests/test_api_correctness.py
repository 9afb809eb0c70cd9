"""API backends: which server answered (cache identity), token counts that keep
budgets inside the server's context window, prices, and credentials in URLs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import run
from fake_openai_server import FakeOpenAIServer

from pipelines.llm.base import Completion
from pipelines.llm.openai_backend import OpenAIBackend
from pipelines.llm.pricing import cost_usd
from pipelines.llm.recording import RecordingLLM
from pipelines.secrets import public_url, redact
from pipelines.store import DuckDBJournal, Store
from prompts import RenderedPrompt

NONLATIN = Path(__file__).parent / "data" / "nonlatin"


def prompt(text: str) -> RenderedPrompt:
    return RenderedPrompt("test", "0" * 64, ({"role": "user", "content": text},), 0)


# -- 1. cache identity --------------------------------------------------------


def test_two_servers_serving_one_model_name_do_not_share_answers(tmp_path):
    journal = DuckDBJournal(Store(tmp_path / "calls.duckdb"))
    question = prompt("Summarize in at most 20 words.\n<text>\nThe cat sat on the mat all day.\n</text>")
    with FakeOpenAIServer(prefix="[vllm] ") as vllm, FakeOpenAIServer(prefix="[ollama] ") as ollama:
        first = RecordingLLM(OpenAIBackend("llama3.1", base_url=vllm.base_url), journal).complete(question, 40)
        second = RecordingLLM(OpenAIBackend("llama3.1", base_url=ollama.base_url), journal).complete(question, 40)
        again = RecordingLLM(OpenAIBackend("llama3.1", base_url=vllm.base_url + "/"), journal).complete(question, 40)
        assert first.text.startswith("[vllm]") and not first.cached
        assert second.text.startswith("[ollama]") and not second.cached  # asked, not replayed from the other server
        assert again.cached and again.text == first.text  # the same server (URL spelled differently) replays
        assert (len(vllm.requests), len(ollama.requests)) == (1, 1)


def test_official_endpoints_keep_their_identity(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000")
    plain = OpenAIBackend("gpt-4o-mini").identity()
    explicit = OpenAIBackend("gpt-4o-mini", base_url="https://API.openai.com/v1/").identity()
    assert plain == explicit == {"backend": "openai", "model": "gpt-4o-mini"}  # caches written before stay valid
    local = OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:8080/v1").identity()
    assert local["server"] == "http://127.0.0.1:8080/v1"


# -- 3. tokenizers ------------------------------------------------------------


def test_openai_models_count_with_their_own_encoding(monkeypatch):
    import bpe_openai

    from pipelines.llm.tokenizers import count_cl100k, count_o200k

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000")
    reference = bpe_openai.get_encoding("o200k_base")  # an independent implementation of o200k
    for path in sorted(NONLATIN.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert count_o200k(text) == len(reference.encode(text)), path.name
    thai = (NONLATIN / "apt_thai.txt").read_text(encoding="utf-8")
    assert count_o200k(thai) < 0.7 * count_cl100k(thai)  # the encodings differ a lot here
    for model, tokenizer in (("gpt-4o-mini", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-5-mini", "o200k_base"),
                             ("o3-mini", "o200k_base"), ("gpt-4", "cl100k_base")):
        backend = OpenAIBackend(model)
        assert backend.tokenizer == tokenizer, model
        assert backend.count_tokens(thai) == (count_o200k(thai) if tokenizer == "o200k_base" else count_cl100k(thai))


def byte_tokens(text: str) -> int:
    """A byte-level model's count (ByT5: one token per UTF-8 byte), far above cl100k on non-Latin text."""
    return len(text.encode("utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("tokenize", [True, False], ids=["server-tokenize", "margin"])
def test_budgets_never_overflow_the_context_window_on_non_latin_text(tmp_path, cli_env, tokenize):
    """A server that counts tokens its own way and refuses (HTTP 400, as vLLM
    does) any request whose prompt plus max_tokens exceeds its window."""
    count = byte_tokens if tokenize else _gemma_count()
    with FakeOpenAIServer(count_tokens=count, context_window=4096, tokenize=tokenize) as server:
        for path in sorted(NONLATIN.glob("*.txt")):
            db = tmp_path / f"{path.stem}.duckdb"
            result = run([path, "--model", "openai:served", "--base-url", server.base_url, "--context-window", "4096",
                          "--chunk-size", "1000", "--summary-words", "40", "--db", db, "--json", "-q", "--retries", "0"],
                         cli_env)
            assert not server.rejected, server.rejected[:1]
            assert result.returncode == 0, result.stderr
        if tokenize:
            assert server.tokenize_calls > 0


def _gemma_count():
    """Gemma 3's tokenizer (vocabulary only): a real tokenizer longsum cannot know behind a server."""
    from pipelines.llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend("gemma-3-270m").count_tokens


# -- 4. prices ----------------------------------------------------------------


def test_prices_come_from_genai_prices_with_cache_reads_and_writes():
    plain = Completion("x", input_tokens=1_000_000, output_tokens=0, finish_reason="stop", latency_s=0)
    written = Completion("x", input_tokens=1_000_000, output_tokens=0, finish_reason="stop", latency_s=0,
                         cache_write_tokens=1_000_000)
    read = Completion("x", input_tokens=1_000_000, output_tokens=0, finish_reason="stop", latency_s=0,
                      cached_input_tokens=1_000_000)
    haiku = "claude-3-5-haiku-latest"
    assert cost_usd("anthropic", haiku, written) == pytest.approx(1.25 * cost_usd("anthropic", haiku, plain))
    assert cost_usd("anthropic", haiku, read) == pytest.approx(0.1 * cost_usd("anthropic", haiku, plain))
    assert cost_usd("openai", "gpt-4o-mini", read) < cost_usd("openai", "gpt-4o-mini", plain)
    # a local server that names its model like OpenAI's is not billed at OpenAI's prices
    assert cost_usd("openai", "gpt-4o-mini", plain, base_url="http://127.0.0.1:8080/v1") is None
    assert cost_usd("openai", "no-such-model-xyz", plain) is None
    assert cost_usd("llamacpp", "gemma", plain) == 0.0


def test_prices_need_no_network():
    """genai-prices ships its data; a process whose sockets all fail still prices calls."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from pipelines.llm.base import Completion\n"
        "from pipelines.llm.pricing import cost_usd\n"
        "c = Completion('x', input_tokens=1000, output_tokens=1000, finish_reason='stop', latency_s=0)\n"
        "print(cost_usd('openai', 'gpt-4o-mini', c), cost_usd('anthropic', 'claude-sonnet-4-5', c))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert all(float(v) > 0 for v in out.stdout.split())


# -- 5. credentials in URLs -----------------------------------------------------

USER_PASS = "longsumuser:Pl4ntedPassw0rd"
QUERY_KEY = "PlantedQueryKey0123"


def test_url_credentials_are_stripped():
    url = f"https://{USER_PASS}@llm.example.org:8443/v1?api-version=2024-10-21&api-key={QUERY_KEY}"
    assert public_url(url) == "https://llm.example.org:8443/v1?api-version=2024-10-21&api-key=***"
    text = redact(f"cannot connect to {url} (after 4 retries)")
    assert "Pl4ntedPassw0rd" not in text and QUERY_KEY not in text and "api-version=2024-10-21" in text


@pytest.mark.slow
@pytest.mark.parametrize("with_key", [False, True])
def test_credentials_in_the_base_url_never_reach_the_database_or_output(tmp_path, cli_env, scandal_text, with_key):
    from conftest import excerpt

    story = tmp_path / "story.txt"
    story.write_text(excerpt(scandal_text, 300), encoding="utf-8")
    db = tmp_path / "urls.duckdb"
    with FakeOpenAIServer() as server:
        url = server.base_url.replace("http://", f"http://{USER_PASS}@")
        env = {**cli_env, "OPENAI_API_KEY": "sk-proj-PLANTEDsecretKEY0123456789abcdefXYZ"} if with_key else cli_env
        ok = run([story, "--model", "openai:fake", "--base-url", url, "--chunk-size", "256", "--summary-words", "40",
                  "--db", db, "--json"], env)
        assert ok.returncode == 0, ok.stderr
        assert server.requests  # the URL with its credentials was really used
        down = url.replace(str(server._server.server_address[1]), "9")  # nothing listens: the error names the URL
        bad = run([story, "--model", "openai:other", "--base-url", down, "--db", db, "--retries", "0"], env)
    assert bad.returncode == 1 and "cannot connect" in bad.stderr
    store = Store(db, read_only=True)
    blob = ""
    with store.connect() as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            blob += json.dumps(con.execute(f"SELECT * FROM {table}").fetchall(), default=str)
    assert "127.0.0.1" in blob  # the server is recorded (runs.params), without its credentials
    for text in (blob, ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert "Pl4ntedPassw0rd" not in text and "longsumuser" not in text
