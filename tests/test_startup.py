"""`summarize --help` and `summarize sql` start without the heavy libraries,
and the cached help page is exactly the page click renders."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUMMARIZE = str(Path(sys.executable).parent / "summarize")
HEAVY = ("torch", "prefect", "llama_cpp", "bert_score", "rouge_score", "transformers", "sentence_transformers",
         "openai", "anthropic", "dask")
PROBE = """
import sys
sys.argv = {argv!r}
from pipelines.launcher import main
try:
    main()
except SystemExit:
    pass
print("LOADED=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def loaded_modules(argv, env=None, heavy=HEAVY) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=heavy)], capture_output=True, text=True,
                         env=env)
    line = [x for x in out.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return [m for m in line[7:].split(",") if m]


def cache_env(tmp_path, **extra) -> dict:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}


def summarize_help(env) -> subprocess.CompletedProcess:
    return subprocess.run([SUMMARIZE, "--help"], capture_output=True, text=True, env=env, check=True)


@pytest.mark.parametrize("argv", [["summarize", "--help"], ["summarize", "runs", "--help"], ["summarize", "sql", "SELECT 42"]])
def test_light_commands_import_no_heavy_library(argv, tmp_path):
    if argv[1] == "sql":
        argv = [*argv, "--unsafe", "--db", str(tmp_path / "s.duckdb")]
    assert loaded_modules(argv, cache_env(tmp_path)) == []


@pytest.mark.parametrize("columns", ["60", "100"])
def test_cached_help_is_the_page_click_renders(tmp_path, columns):
    env = cache_env(tmp_path, COLUMNS=columns)
    from_click = subprocess.run([SUMMARIZE, "--help"], capture_output=True, text=True, check=True,
                                env={**env, "LONGSUM_HELP_CACHE": "0"}).stdout
    first = summarize_help(env).stdout
    assert list((tmp_path / "cache" / "longsum").glob("help-*.txt"))
    second = summarize_help(env).stdout
    assert first == second == from_click
    assert "Usage: summarize" in from_click and "import-booookscore" in from_click
    commands = from_click.split("Commands:")[1].splitlines()
    assert max(map(len, commands)) <= int(columns)


def test_help_from_the_cache_does_not_import_click(tmp_path):
    env = cache_env(tmp_path)
    summarize_help(env)
    assert loaded_modules(["summarize", "--help"], env, heavy=("click", "pipelines.cli")) == []
    assert loaded_modules(["summarize", "-h"], env, heavy=("click", "pipelines.cli")) == []


def test_a_changed_source_renders_the_help_again(tmp_path, monkeypatch):
    from pipelines import launcher

    source = tmp_path / "cli.py"
    source.write_text("one")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(launcher, "_source_files", lambda: [str(source)])
    launcher.write_cached_help(78, "the page\n")
    assert launcher.read_cached_help(78) == "the page\n"
    assert launcher.read_cached_help(60) is None
    source.write_text("one, edited")
    assert launcher.read_cached_help(78) is None


def test_an_unwritable_cache_still_prints_the_help(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache directory would go")
    result = summarize_help(cache_env(tmp_path))
    assert result.stdout.startswith("Usage: summarize") and result.stderr == ""


def test_lazy_command_summaries_match_the_commands():
    import click

    from pipelines.cli import LAZY_COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, short_help) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        doc_first_line = (command.help or "").strip().splitlines()[0]
        assert doc_first_line == short_help, name
