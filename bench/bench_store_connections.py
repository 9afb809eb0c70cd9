"""A run's cost in the store: a connection per unit of work against one kept for the run.

Runs `summarize FILE` against the test server in tests/ (instant answers, so what is left is
longsum's own work: chunking, prompts, the journal, the rows), each time in a fresh process and a
new database, then once more on the same database (every call replayed from the journal). With
LONGSUM_DB_LINGER_S=0 every unit of work opens the file and closes it (a checkpoint); by default
a run keeps its connection between units (pipelines/store/lingering.py). Prints the median
process CPU and wall time of `--repeat` runs of each, and the file's size after each.

    .venv/bin/python bench/bench_store_connections.py
    .venv/bin/python bench/bench_store_connections.py tests/data/books/austen_persuasion.txt --repeat 1 -- --chunk-size 400
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, book

MODES = {"a connection per unit": "0", "one kept for the run": ""}


def timed_run(command: list[str], linger: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `summarize` process."""
    env = {**os.environ, "LONGSUM_DB_LINGER_S": linger}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *command], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default=str(book("doyle_scandal_in_bohemia.txt")))
    parser.add_argument("--repeat", type=int, default=3)
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    from fake_openai_server import FakeOpenAIServer

    folder = Path(tempfile.mkdtemp(prefix="longsum-connections-"))
    print(f"{'':24} {'calls':>6} {'run CPU s':>10} {'run wall s':>11} {'re-run CPU s':>13} {'bytes':>10}")
    with FakeOpenAIServer() as server:
        for mode, linger in MODES.items():
            first, again, calls, size = [], [], 0, 0
            for n in range(args.repeat):
                db = folder / f"{linger or 'kept'}-{n}.duckdb"
                command = [str(Path(args.file).resolve()), "--model", "openai:fake", "--base-url", server.base_url,
                           "--db", str(db), "-q", *rest]
                before = len(server.requests)
                first.append(timed_run(command, linger))
                calls = sum(1 for r in server.requests[before:] if r["body"].get("messages"))
                again.append(timed_run(command, linger))
                size = db.stat().st_size
            print(f"{mode:24} {calls:>6} {statistics.median(c for c, _ in first):>10.2f} "
                  f"{statistics.median(w for _, w in first):>11.2f} {statistics.median(c for c, _ in again):>13.2f} "
                  f"{size:>10,}")


if __name__ == "__main__":
    main()
