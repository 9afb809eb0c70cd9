"""`summarize --help`, `summarize runs --help` and `summarize sql` (read-only
and sandboxed, as users run it) start without the heavy libraries."""

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
except SystemExit as exc:
    print("EXIT=" + str(exc.code or 0), file=sys.stderr)
print("LOADED=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def probe(argv) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True,
                         timeout=120)
    line = [x for x in out.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return out, [m for m in line[7:].split(",") if m]


@pytest.mark.parametrize("argv", [["summarize", "--help"], ["summarize", "runs", "--help"], ["summarize", "sql", "SELECT 42"]],
                         ids=["help", "runs-help", "sql"])
def test_light_commands_import_no_heavy_library(argv, tmp_path):
    if argv[1] == "sql":
        from pipelines.store import Store

        db = tmp_path / "s.duckdb"
        Store(db).execute("SELECT 1")  # an existing store, opened read-only by `sql`
        argv = [*argv, "--db", str(db)]
    out, loaded = probe(argv)
    assert "EXIT=0" in out.stderr, out.stderr  # main() always exits, with the command's status
    if argv[1] == "sql":
        assert "42" in out.stdout  # the query really ran
    assert loaded == []
