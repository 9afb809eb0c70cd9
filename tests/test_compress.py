"""The compression API (`pipelines.compress.compress_text`) and the
`summarize compress` command."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BOOKS, excerpt
from scripted import ScriptedBackend
from test_longcodezip import CopyScorer, demo_code, demo_query
from test_scope import short_valid

from pipelines.compress import compress_text, resolve_method, split_fenced
from pipelines.llm.recording import MemoryJournal, RecordingLLM


@pytest.fixture()
def llm():
    return RecordingLLM(ScriptedBackend(short_valid, context_window=8192), MemoryJournal())


@pytest.fixture(scope="module")
def prose() -> str:
    return excerpt((BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8"), 500)


def test_method_none_and_validation(llm, prose):
    result = compress_text(prose, method="none", llm=llm)
    assert result.text == prose and result.ratio == 1.0 and result.method == "none"
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError):
            compress_text(prose, ratio=bad, llm=llm)
    with pytest.raises(ValueError, match="unknown compression method"):
        compress_text(prose, method="zip", llm=llm)
    with pytest.raises(ValueError, match="needs an LLM"):
        compress_text(prose, method="scope")
    assert resolve_method("auto", "code") == "longcodezip"
    assert resolve_method("auto", "book") == resolve_method("auto", "paper") == "scope"


def test_auto_sends_code_to_longcodezip_and_prose_to_scope(llm, prose):
    scorer = CopyScorer()
    code = compress_text(demo_code(), method="auto", kind="code", ratio=0.3, query=demo_query(), scorer=scorer,
                         count_tokens=scorer.count)
    assert code.method == "longcodezip" and code.ratio <= 0.3 * 1.03
    assert code.original_tokens == scorer.count(demo_code()) and code.compressed_tokens == scorer.count(code.text)
    text = compress_text(prose, method="auto", kind="book", ratio=0.5, llm=llm)
    assert text.method == "scope" and abs(text.ratio - 0.5) <= 0.05
    assert text.compressed_tokens == llm.count_tokens(text.text)
    assert text.original_tokens == llm.count_tokens(prose)
    json.dumps(text.as_dict())  # ready for the store
    json.dumps(code.as_dict(with_text=False))


def test_fenced_code_in_prose_goes_to_longcodezip(llm, prose):
    code = demo_code().rstrip("\n") + "\n"
    text = f"# Notes on the agent\n\n{prose}\n```python\n{code}```\n\n{prose}"
    segments = split_fenced(text)
    assert [s[0] for s in segments] == ["prose", "fence", "code", "fence", "prose"]
    assert "".join(text[s:e] for _, s, e, _ in segments) == text
    assert text[segments[2][1]:segments[2][2]] == code and segments[2][3] == "python"
    scorer = CopyScorer()
    result = compress_text(text, method="auto", kind="paper", ratio=0.4, query=demo_query(), llm=llm, scorer=scorer)
    assert result.method == "mixed"
    assert "```python\n" in result.text and result.text.count("```") == 2
    inside = result.text.split("```python\n")[1].split("```")[0]
    assert "# ..." in inside and "async def _finalize_step(" in inside
    assert {c.method for c in result.chunks} == {"scope", "longcodezip"}
    for c in result.chunks:
        kind = "code" if c.method == "longcodezip" else "prose"
        assert any(k == kind and s <= c.start and c.end <= e for k, s, e, _ in segments)
    assert result.original_tokens == llm.count_tokens(text)
    assert result.compressed_tokens == llm.count_tokens(result.text)
    assert result.ratio < 0.6


def test_cli_reports_a_missing_file(tmp_path, cli_env):
    proc = subprocess.run(
        ["summarize", "compress", str(tmp_path / "nope.py"), "--db", str(tmp_path / "db.duckdb")],
        capture_output=True, text=True, env=cli_env, timeout=120,
    )
    assert proc.returncode == 1 and "no such file" in proc.stderr and not proc.stdout


@pytest.mark.llm
def test_cli_prints_only_the_compressed_code(tmp_path, cli_env):
    lines = demo_code().split("\n")
    end = next(i for i, line in enumerate(lines) if "def _close_tools" in line)
    source = tmp_path / "agent.py"
    source.write_text("\n".join(lines[:end]) + "\n", encoding="utf-8")
    stats = tmp_path / "stats.json"
    proc = subprocess.run(
        ["summarize", "compress", str(source), "--query", "def new_task(self, task, extra_args)",
         "--ratio", "0.5", "--db", str(tmp_path / "db.duckdb"), "--stats-json", str(stats)],
        capture_output=True, text=True, env=cli_env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(stats.read_text(encoding="utf-8"))
    assert proc.stdout == report["text"]
    assert report["method"] == "longcodezip" and report["ratio"] <= 0.5 * 1.03
    assert "longcodezip:" in proc.stderr and "ratio" in proc.stderr
    assert "def new_task(" in proc.stdout
