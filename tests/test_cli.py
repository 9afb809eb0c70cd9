"""The `summarize` command as a user runs it: a real subprocess."""

import json

import pytest
from conftest import excerpt

from clitools import run


@pytest.fixture()
def db(tmp_path):
    return str(tmp_path / "cli.duckdb")


COMMANDS = ("run", "runs", "show", "sql", "check", "db-path", "vacuum", "chunks", "compress", "score", "eval",
            "import-booookscore", "import-fables", "corpus", "serve", "limits", "text", "report", "snapshots", "db")


def test_help_lists_commands(cli_env):
    """Every command is listed, with its one-line help, and answers its own --help;
    a command added to the CLI must be added here too."""
    from pipelines.cli import cli

    assert sorted(cli.commands) == sorted(COMMANDS)
    result = run(["--help"], cli_env)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0].rstrip("*") for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)
    for command in COMMANDS:
        own = run([command, "--help"], cli_env)
        assert own.returncode == 0 and f"Usage: summarize {command}" in own.stdout, (command, own.stderr)
    for sub in ("squality", "fables"):
        own = run(["eval", sub, "--help"], cli_env)
        assert own.returncode == 0 and f"Usage: summarize eval {sub}" in own.stdout, (sub, own.stderr)
    own = run(["db", "copy", "--help"], cli_env)
    assert own.returncode == 0 and "Usage: summarize db copy" in own.stdout, own.stderr


@pytest.mark.slow
def test_extractive_run_json_output_file_and_queries(tmp_path, cli_env, db, scandal_text):
    story = tmp_path / "story.txt"
    story.write_text(excerpt(scandal_text, 2000), encoding="utf-8")
    out = tmp_path / "out" / "summary.txt"
    result = run([str(story), "--method", "extractive", "--summary-words", "80", "--db", db, "--json", "-o", str(out)], cli_env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) >= {"run_id", "summary", "usage", "status", "seconds", "n_chunks"}
    assert payload["status"] == "ok" and 0 < payload["summary_words"] <= 80
    assert out.read_text(encoding="utf-8").strip() == payload["summary"]

    runs = run(["runs", "--db", db, "--format", "json"], cli_env)
    listed = json.loads(runs.stdout)
    assert listed[0]["run_id"] == payload["run_id"] and listed[0]["method"] == "extractive"
    shown = run(["show", payload["run_id"][:8], "--db", db], cli_env)
    assert shown.stdout.strip() == payload["summary"]
    csv_out = run(["sql", "SELECT method, status FROM runs", "--db", db, "--format", "csv"], cli_env)
    assert csv_out.stdout.splitlines() == ["method,status", "extractive,ok"]
    table = run(["sql", "SELECT count(*) AS n FROM chunks", "--db", db], cli_env)
    assert "(1 row)" in table.stdout
