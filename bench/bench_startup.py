"""Start-up cost of the command: `summarize --help` and `summarize sql`
against `python -c pass`, median of several runs, and which heavy libraries
each one loads (none should). `--help` is measured twice: the first call
after an install or an edit (click renders the page, an empty cache each
time) and every later call (the page comes from the cache).

    python bench/bench_startup.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import table

HEAVY = ("torch", "prefect", "llama_cpp", "bert_score", "rouge_score", "transformers", "duckdb", "openai", "anthropic")
BIN = Path(sys.executable).parent
PROBE = (
    "import sys; sys.argv = {argv!r}; from pipelines.launcher import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('LOADED=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
)


def median_wall(cmd: list[str], repeat: int, fresh_cache: bool) -> float:
    walls = []
    for _ in range(repeat):
        env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp()} if fresh_cache else None
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=env)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def loaded(argv: list[str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True)
    line = [x for x in out.stderr.splitlines() if x.startswith("LOADED=")]
    return line[-1][7:] if line else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "startup.duckdb"
    subprocess.run([str(BIN / "summarize"), "sql", "SELECT 1", "--unsafe", "--db", str(db)], capture_output=True, check=True)
    help_cmd = [str(BIN / "summarize"), "--help"]
    subprocess.run(help_cmd, capture_output=True, check=True)  # the cached page for the second case
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"], None, False),
        ("summarize --help (first call: click renders)", help_cmd, ["summarize", "--help"], True),
        ("summarize --help (cached page)", help_cmd, ["summarize", "--help"], False),
        ("summarize sql 'SELECT count(*) FROM runs'", [str(BIN / "summarize"), "sql", "SELECT count(*) FROM runs", "--db", str(db)],
         ["summarize", "sql", "SELECT count(*) FROM runs", "--db", str(db)], False),
    ]
    base, rows = None, []
    for name, cmd, argv, fresh_cache in cases:
        wall = median_wall(cmd, args.repeat, fresh_cache)
        base = base or wall
        rows.append([name, f"{wall * 1000:.0f}", f"{wall / base:.1f}", (loaded(argv) or "none") if argv else "-"])
    print(f"\nmedian of {args.repeat} runs, {os.cpu_count()} cores\n")
    print(table(["command", "wall ms", "x python -c pass", "heavy modules loaded"], rows))


if __name__ == "__main__":
    main()
