"""The embedded default, Qwen2.5-Coder-1.5B-Instruct, summarizes for real:
one short real excerpt end to end through the `summarize` command."""

import json

import pytest

from clitools import run
from conftest import excerpt
from pipelines.summarize.degeneration import detect, instructions_of

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def test_the_default_model_writes_a_real_summary(tmp_path, cli_env, scandal_text):
    story = tmp_path / "scandal_opening.txt"
    text = excerpt(scandal_text, 280)
    story.write_text(text, encoding="utf-8")
    db = tmp_path / "qwen.duckdb"
    env = {k: v for k, v in cli_env.items() if k != "LONGSUM_MODEL"}  # the real default, not the tests' tiny one
    done = run([story, "--summary-words", "60", "--json", "--db", db], env, timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "llamacpp:qwen2.5-coder-1.5b-instruct"
    assert result["status"] == "ok" and result["degraded_summaries"] == 0, done.stderr
    assert "tiny" not in done.stderr  # no notice: this model can do the job
    summary = result["summary"]
    assert 0 < result["summary_words"] < len(text.split()) / 2
    # No degeneration and no echo of the prompt, checked on the answer as stored.
    from pipelines.store import Store

    ((request, response),) = Store(db, read_only=True).execute(
        "SELECT request, response FROM llm_calls WHERE NOT cached AND status = 'ok'")
    assert response.strip().startswith(summary)  # the answer, or its complete sentences when cut at max_tokens
    assert detect(summary, instructions_of(json.loads(request)["messages"])) is None
    # It is about the story: names the text gives.
    assert "Holmes" in summary or "Watson" in summary
