"""`summarize --help` and `summarize sql` start without the heavy libraries."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "prefect", "llama_cpp", "bert_score", "rouge_score", "transformers", "sentence_transformers",
         "openai", "anthropic", "dask")
PROBE = """
import sys
sys.argv = {argv!r}
from pipelines.cli import main
try:
    main()
except SystemExit:
    pass
print("LOADED=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def loaded_modules(argv) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True)
    line = [x for x in out.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return [m for m in line[7:].split(",") if m]


@pytest.mark.parametrize("argv", [["summarize", "--help"], ["summarize", "runs", "--help"], ["summarize", "sql", "SELECT 42"]])
def test_light_commands_import_no_heavy_library(argv, tmp_path):
    if argv[1] == "sql":
        argv = [*argv, "--unsafe", "--db", str(tmp_path / "s.duckdb")]
    assert loaded_modules(argv) == []


def test_lazy_command_summaries_match_the_commands():
    import click

    from pipelines.cli import LAZY_COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, short_help) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        doc_first_line = (command.help or "").strip().splitlines()[0]
        assert doc_first_line == short_help, name
