"""Store size after one run and after identical re-runs (issue 22 item 4).

Runs `summarize FILE` once into a new database, then `--reruns` more times
(each replays every call), and prints the file's size after a CHECKPOINT
after each run, its used and free 256 KiB blocks, the size the same tables
take in a fresh file (a copy, as `summarize vacuum` would leave it), the texts
stored, the call rows and the text those rows show through `llm_calls`; then
what `summarize vacuum` does to the file.

    .venv/bin/python bench/bench_store_size.py examples/doyle_scandal_in_bohemia.txt --model llamacpp:gemma-3-270m
    .venv/bin/python bench/bench_store_size.py tests/data/books/austen_persuasion.txt --fake-server -- --chunk-size 400

`--fake-server` answers from the test server in tests/ (instant, deterministic
answers) with `--model openai:fake`. Arguments after `--` go to `summarize`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def summarize(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, cwd=ROOT)


def measure(db: Path) -> dict:
    import duckdb

    from pipelines.store import BLOCK_SIZE

    con = duckdb.connect(str(db))
    try:
        con.execute("CHECKPOINT")
        used, free = con.execute("SELECT used_blocks, free_blocks FROM pragma_database_size() "
                                 "WHERE database_name = current_database()").fetchone()
        has_texts = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'texts'").fetchone()[0]
        texts = con.execute("SELECT count(*), coalesce(sum(strlen(text)), 0) FROM texts").fetchone() \
            if has_texts else (None, None)
        calls, shown = con.execute("SELECT count(*), coalesce(sum(strlen(CAST(request AS VARCHAR))), 0) "
                                   "+ coalesce(sum(strlen(response)), 0) FROM llm_calls").fetchone()
        # What the same tables take in a fresh file (what `summarize vacuum` leaves), measured on a copy.
        copy = db.with_name("compacted.duckdb")
        copy.unlink(missing_ok=True)
        name = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH '{copy}' AS compacted (BLOCK_SIZE {BLOCK_SIZE})")  # as the store makes files
        con.execute(f'COPY FROM DATABASE "{name}" TO compacted')
        con.execute("DETACH compacted")
        compacted = copy.stat().st_size
        copy.unlink()
    finally:
        con.close()
    return {"bytes": db.stat().st_size, "used": used, "free": free, "texts": texts[0], "text_chars": texts[1],
            "call_rows": calls, "call_chars": shown, "compacted": compacted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--model", default=None)
    parser.add_argument("--fake-server", action="store_true", help="answer from tests/fake_openai_server.py")
    parser.add_argument("--reruns", type=int, default=5)
    parser.add_argument("--db", default=None, help="database to create (default: a temporary one)")
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    db = Path(args.db or Path(tempfile.mkdtemp(prefix="longsum-size-")) / "size.duckdb")
    if db.exists():
        raise SystemExit(f"{db} exists: the benchmark starts from a new database")
    server = None
    command = [str(Path(args.file).resolve()), "--db", str(db), "-q", "--json", *rest]
    if args.fake_server:
        sys.path.insert(0, str(ROOT / "tests"))
        from fake_openai_server import FakeOpenAIServer

        server = FakeOpenAIServer().__enter__()
        command += ["--model", "openai:fake", "--base-url", server.base_url]
    elif args.model:
        command += ["--model", args.model]
    rows = []
    try:
        for n in range(1 + args.reruns):
            done = summarize(command)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            rows.append(("run 1" if n == 0 else f"re-run {n}", measure(db)))
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    vacuumed = summarize(["vacuum", "--db", str(db)])
    first, first_compacted = rows[0][1]["bytes"], rows[0][1]["compacted"]
    print(f"{'':10} {'bytes':>10} {'x first':>8} {'used':>5} {'free':>5} {'compacted':>10} {'x first':>8} "
          f"{'texts':>6} {'text chars':>11} {'call rows':>9} {'call chars':>11}")
    for name, m in rows:
        print(f"{name:10} {m['bytes']:>10,} {m['bytes'] / first:>8.2f} {m['used']:>5} {m['free']:>5} "
              f"{m['compacted']:>10,} {m['compacted'] / first_compacted:>8.2f} "
              f"{m['texts'] if m['texts'] is not None else '-':>6} "
              f"{m['text_chars'] if m['text_chars'] is not None else '-':>11} {m['call_rows']:>9} "
              f"{m['call_chars']:>11,}")
    print(f"summarize vacuum: {vacuumed.stdout.strip() or vacuumed.stderr.strip()}")
    print(f"database: {db}")


if __name__ == "__main__":
    main()
