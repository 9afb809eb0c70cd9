"""The preflight agrees with itself (issue 27, item 6): `summarize chunks`,
`summarize FILE --dry-run` and the `--max-cost` refusal, as a user runs
them (no API key: an official spec is planned with its tokenizer alone)."""

from __future__ import annotations

import re
import shlex

import pytest

from clitools import assert_one_line_error, run
from conftest import DATA

BOOK = DATA / "books" / "austen_prideprejudice.txt"  # 89 chunks of 2048 o200k tokens: merges above the chunks
STORY = DATA / "books" / "doyle_scandal_in_bohemia.txt"
API = "openai:gpt-4o-mini"


@pytest.mark.slow
def test_levels_are_said_once_and_as_the_workflow_plans_them(cli_env):
    """The header made its own guess of the merge levels (8 summaries a
    merge: "merges over 3+ levels") above the estimate's "up to 2 levels";
    now only the estimate, planned by the workflow, speaks of levels."""
    import json

    result = run([BOOK, "--model", API, "--dry-run"], cli_env)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "level" in line]
    assert len(said) == 1 and said[0].startswith("plan: hierarchical"), result.stdout
    payload = json.loads(run([BOOK, "--model", API, "--dry-run", "--json"], cli_env).stdout)
    levels = payload["estimate"]["levels"]
    assert levels >= 2
    merges = levels - 1
    assert f"up to {levels} summary levels (the chunk summaries and {merges} level" in said[0]


def test_an_incremental_dry_run_speaks_of_incremental_only(cli_env):
    result = run([STORY, "--model", API, "--method", "incremental", "--dry-run"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "plan: incremental" in result.stdout
    assert "hierarchical" not in result.stdout and "merge" not in result.stdout


@pytest.mark.slow
def test_the_refusal_suggests_the_command_it_was_given(cli_env, tmp_path):
    """--max-cost refused: the dry run it suggests has the --model (and the
    other options) of the refused command, and running it prints the plan
    whose upper bound the refusal quoted."""
    db = tmp_path / "x.duckdb"
    result = run([STORY, "--model", API, "--chunk-size", "1024", "--summary-words", "200", "--max-cost", "0.00001",
                  "--db", db], cli_env)
    line = assert_one_line_error(result, "exceeds --max-cost", "nothing was started")
    bound = re.search(r"upper bound (\S+)", line).group(1)
    command = re.search(r"run `([^`]+)` for the plan", line).group(1)
    words = shlex.split(command)
    assert words[0] == "summarize" and "--dry-run" in words
    for option, value in (("--model", API), ("--chunk-size", "1024"), ("--summary-words", "200")):
        assert words[words.index(option) + 1] == value, command
    dry = run(words[1:], cli_env)
    assert dry.returncode == 0, dry.stderr
    assert f"to {bound} at list prices" in dry.stdout
    assert not db.exists()


def test_a_local_model_costs_nothing_and_says_so(cli_env):
    result = run([STORY, "--model", "llamacpp:gemma-3-270m", "--dry-run"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "$0.0000" not in result.stdout
    assert "estimated cost: $0 (a local model: no per-token price)" in result.stdout


def test_chunks_list_prints_its_header_first(cli_env):
    result = run(["chunks", STORY, "--model", API, "--list", "--method", "hierarchical"], cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first_row = next(i for i, line in enumerate(lines) if re.match(r"\s+0\s+\d+ tokens", line))
    assert lines[0].startswith(f"{STORY}: book")  # the document's header comes first
    assert lines[first_row - 1].split() == ["chunk", "tokens", "section", "first", "words"]
    assert lines.index(next(line for line in lines if line.startswith("plan: hierarchical"))) > first_row


def test_money_is_never_printed_as_four_zeros():
    from pipelines.budget import Budget, BudgetExceeded, usd

    assert usd(0) == "$0" and usd(0.0) == "$0"
    assert usd(0.00002) == "under $0.0001"
    assert usd(0.0123) == "$0.0123" and usd(12.5) == "$12.50" and usd(None) == "unknown"
    budget = Budget(0.00001)
    budget.add(0.00003)
    try:
        budget.check()
    except BudgetExceeded as exc:
        assert "$0.0000" not in str(exc) and "under $0.0001" in str(exc)
    else:
        raise AssertionError("a spent budget must refuse")
