"""Start-up cost of the command: `summarize --help` and `summarize sql`
against `python -c pass`, median of several runs, and which heavy libraries
each one loads (none should).

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
    "import sys; sys.argv = {argv!r}; from pipelines.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('LOADED=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
)


def median_wall(cmd: list[str], repeat: int) -> float:
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
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
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"], None),
        ("summarize --help", [str(BIN / "summarize"), "--help"], ["summarize", "--help"]),
        ("summarize sql 'SELECT count(*) FROM runs'", [str(BIN / "summarize"), "sql", "SELECT count(*) FROM runs", "--db", str(db)],
         ["summarize", "sql", "SELECT count(*) FROM runs", "--db", str(db)]),
    ]
    base, rows = None, []
    for name, cmd, argv in cases:
        wall = median_wall(cmd, args.repeat)
        base = base or wall
        rows.append([name, f"{wall * 1000:.0f}", f"{wall / base:.1f}", (loaded(argv) or "none") if argv else "-"])
    print(f"\nmedian of {args.repeat} runs, {os.cpu_count()} cores\n")
    print(table(["command", "wall ms", "x python -c pass", "heavy modules loaded"], rows))


if __name__ == "__main__":
    main()
