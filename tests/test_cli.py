"""The `summarize` command as a user runs it: a real subprocess."""

import json
import subprocess

import pytest
from conftest import BOOKS, excerpt

TRACEBACK = "Traceback (most recent call last)"


def run(args, env, timeout=300, **kwargs):
    return subprocess.run(["summarize", *args], capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert TRACEBACK not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("summarize: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture()
def db(tmp_path):
    return str(tmp_path / "cli.duckdb")


def test_help_lists_commands(cli_env):
    result = run(["--help"], cli_env)
    assert result.returncode == 0
    for command in ("runs", "show", "sql", "db-path"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such file"),
        ("DIR", "is a directory"),
        (b"", "empty"),
        (b"   \n\n\t  ", "only whitespace"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "PNG image"),
    ],
)
def test_bad_input_files(tmp_path, cli_env, db, content, fragment):
    path = tmp_path / "input.txt"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = run([str(path), "--db", db, "-q"], cli_env)
    assert_one_line_error(result, fragment)


def test_bad_model_specs_and_missing_keys(tmp_path, cli_env, db):
    story = BOOKS / "doyle_scandal_in_bohemia.txt"
    assert_one_line_error(run([str(story), "--model", "gpt-4", "--db", db], cli_env), "unknown model spec")
    assert_one_line_error(run([str(story), "--model", "openai:gpt-4o-mini", "--db", db], cli_env), "OPENAI_API_KEY is not set")
    assert_one_line_error(run([str(story), "--model", "anthropic:claude-3-5-haiku-latest", "--db", db], cli_env), "ANTHROPIC_API_KEY")
    assert_one_line_error(run([str(story), "--model", "llamacpp:/nowhere/m.gguf", "--db", db], cli_env), "model file not found")
    assert_one_line_error(run([str(story), "--chunk-size", "7900", "--db", db, "-q"], cli_env), "context")


def test_database_that_is_not_duckdb(tmp_path, cli_env):
    bogus = tmp_path / "notes.duckdb"
    bogus.write_text("this is not a database\n" * 100)
    story = BOOKS / "doyle_scandal_in_bohemia.txt"
    assert_one_line_error(run([str(story), "--method", "extractive", "--db", str(bogus), "-q"], cli_env), "not a DuckDB database")


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


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("SELEC nonsense", "SQL error"),
        ("DROP TABLE runs", "read-only"),
        ("DELETE FROM runs", "read-only"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
        ("ATTACH '/tmp/other.duckdb' AS other", "disabled"),
        ("COPY runs TO '/tmp/runs.csv'", "disabled"),
        ("INSTALL httpfs", "disabled"),
        ("LOAD httpfs", "disabled"),
    ],
)
def test_sql_is_read_only_and_sandboxed(tmp_path, cli_env, query, fragment):
    db = str(tmp_path / "q.duckdb")
    assert run(["db-path", "--db", db], cli_env).stdout.strip() == db
    from pipelines.store import Store

    Store(db).execute("SELECT 1")  # create the schema
    assert_one_line_error(run(["sql", query, "--db", db], cli_env), fragment)


def test_sql_on_missing_database(tmp_path, cli_env):
    assert_one_line_error(run(["sql", "SELECT 1", "--db", str(tmp_path / "none.duckdb")], cli_env), "no database")
