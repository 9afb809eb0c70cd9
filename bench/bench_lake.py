"""Many writers, one store: WRITERS `summarize eval squality` processes (extractive, ROUGE) at once
into one DuckLake on the machine's PostgreSQL, then into WRITERS separate DuckDB files; a reader
queries the store all the while. Prints one table: commits per second, p50/p95 latency of a write
(connection to commit, conflict retries included), conflicts retried, writes spooled, rows lost,
the reader's query latency, the lake's snapshots after, and sizes.

    python bench/bench_lake.py [--writers 4] [--documents 25]

Needs PostgreSQL running with a role for this user (tests/start_postgres.sh) and duckdb with the
DuckLake extension wheels (pyproject.toml pins them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pipelines.lake import folder_size  # noqa: E402
from pipelines.store import Store, file_size  # noqa: E402
from textdata import excerpt  # noqa: E402

BOOKS = ROOT / "tests" / "data" / "books"
READER_SQL = "SELECT count(*), avg(value) FROM scores WHERE metric = 'rougeL'"


def stories(folder: Path, writers: int, documents: int) -> list[Path]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(BOOKS.glob("*.txt"))]
    files = []
    for writer in range(writers):
        path = folder / f"stories{writer}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for n in range(documents):
                text = texts[(writer * documents + n) % len(texts)]
                start = ((writer * documents + n) * 1500) % max(1, len(text) - 6000)
                story = excerpt(text[start:], 300)
                fh.write(json.dumps({"metadata": {"passage_id": f"w{writer}-{n}"}, "document": story, "questions": [{
                    "question_text": "What is the plot of the story?",
                    "responses": [{"worker_id": "w", "response_text": story[:500]}]}]}) + "\n")
        files.append(path)
    return files


def phase(label: str, targets: list[str], files: list[Path], folder: Path, reader_target: str, env: dict) -> dict:
    stats_files = [folder / f"{label}-stats{n}.json" for n in range(len(files))]
    processes = []
    started = time.monotonic()
    for n, (target, stories_file) in enumerate(zip(targets, files)):
        home = folder / f"{label}-machine{n}"
        home.mkdir()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "eval", "squality", str(stories_file), "--method", "extractive",
             "--score", "rouge", "-q", "--db", target],
            cwd=home, env={**env, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                           "LONGSUM_WRITE_STATS": str(stats_files[n])},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    latencies, refused, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            began = time.monotonic()
            try:
                Store(reader_target, read_only=True).execute(READER_SQL)
                latencies.append(time.monotonic() - began)
            except Exception as exc:  # not there yet, or refused
                if "not a lake yet" not in str(exc) and "no database" not in str(exc) \
                        and "no longsum tables" not in str(exc):
                    refused.append(str(exc)[:200])
            time.sleep(0.25)

    reader = threading.Thread(target=read)
    reader.start()
    errors = [p.communicate()[1] for p in processes]
    seconds = time.monotonic() - started
    stop.set()
    reader.join()
    for process, err in zip(processes, errors):
        if process.returncode != 0:
            print(f"{label}: a writer failed: {err.strip()[-400:]}", file=sys.stderr)
    stats = [json.loads(p.read_text()) for p in stats_files if p.exists()]
    writes = sorted(x for s in stats for x in s["latencies"])
    return {"seconds": seconds, "commits": sum(s["commits"] for s in stats),
            "conflicts": sum(s["conflicts"] for s in stats), "spooled": sum(s["spooled"] for s in stats),
            "p50": statistics.median(writes) if writes else None,
            "p95": writes[int(0.95 * (len(writes) - 1))] if writes else None,
            "reads": latencies, "refused": refused, "failed": sum(p.returncode != 0 for p in processes)}


def counts(target: str) -> tuple[int, int, int]:
    return Store(target, read_only=True).execute(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'ok'), (SELECT count(*) FROM scores), "
        "(SELECT count(*) FROM corpus_results WHERE status = 'ok')")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--documents", type=int, default=25)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    database = f"longsum_bench_{uuid.uuid4().hex[:10]}"
    subprocess.run(["createdb", "-h", "/var/run/postgresql", database], check=True)
    lake = f"ducklake:postgres:dbname={database} host=/var/run/postgresql"
    env = {**os.environ, "LONGSUM_DATA_PATH": str(folder / "lake-data"), "DO_NOT_TRACK": "1"}
    env.pop("LONGSUM_DB", None)
    try:
        files = stories(folder, args.writers, args.documents)
        expected = args.writers * args.documents
        # A lake is made once, by whoever comes first: make it now so that the phase measures writes.
        Store(lake, data_path=folder / "lake-data").execute("SELECT 1")
        lake_phase = phase("lake", [lake] * args.writers, files, folder, lake, env)
        dbs = [str(folder / f"writer{n}.duckdb") for n in range(args.writers)]
        file_phase = phase("files", dbs, files, folder, dbs[0], env)
        lake_counts = counts(lake)
        file_counts = [sum(c) for c in zip(*(counts(db) for db in dbs))]
        snapshots = Store(lake, read_only=True).execute("SELECT count(*) FROM lake.snapshots()")[0][0]
        catalog = int(subprocess.run(["psql", "-h", "/var/run/postgresql", "-d", database, "-Atc",
                                      "SELECT pg_database_size(current_database())"],
                                     capture_output=True, text=True, check=True).stdout.strip())
        data = folder_size(folder / "lake-data")
        files_size = sum(file_size(Path(db)) for db in dbs)
    finally:
        subprocess.run(["dropdb", "-h", "/var/run/postgresql", "--if-exists", "--force", database])
        shutil.rmtree(folder, ignore_errors=True)

    def ms(value):
        return "–" if value is None else f"{value * 1000:.0f}"

    def reads(values):
        if not values:
            return "–"
        ordered = sorted(values)
        return f"{statistics.median(ordered) * 1000:.0f} / {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.0f}"

    rows = [("", f"one lake ({args.writers} writers)", f"{args.writers} DuckDB files")]
    for name, key in (("wall seconds", "seconds"),):
        rows.append((name, f"{lake_phase[key]:.1f}", f"{file_phase[key]:.1f}"))
    rows += [
        ("commits (writes)", str(lake_phase["commits"]), str(file_phase["commits"])),
        ("commits/s", f"{lake_phase['commits'] / lake_phase['seconds']:.1f}",
         f"{file_phase['commits'] / file_phase['seconds']:.1f}"),
        ("write p50 / p95 ms", f"{ms(lake_phase['p50'])} / {ms(lake_phase['p95'])}",
         f"{ms(file_phase['p50'])} / {ms(file_phase['p95'])}"),
        ("conflicts retried", str(lake_phase["conflicts"]), "–"),
        ("writes spooled", str(lake_phase["spooled"]), str(file_phase["spooled"])),
        ("writers failed", str(lake_phase["failed"]), str(file_phase["failed"])),
        ("runs / scores / results", "{} / {} / {}".format(*lake_counts), "{} / {} / {}".format(*file_counts)),
        ("documents lost", str(expected - lake_counts[2]), str(expected - file_counts[2])),
        ("reader p50 / p95 ms", reads(lake_phase["reads"]), reads(file_phase["reads"]) + " (writer 0's file)"),
        ("reader queries / refused", f"{len(lake_phase['reads'])} / {len(lake_phase['refused'])}",
         f"{len(file_phase['reads'])} / {len(file_phase['refused'])}"),
        ("snapshots after", str(snapshots), "–"),
        ("size MB", f"{(catalog + data) / 1e6:.2f} (catalog {catalog / 1e6:.2f} + Parquet {data / 1e6:.2f})",
         f"{files_size / 1e6:.2f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for refused in (lake_phase["refused"] + file_phase["refused"])[:3]:
        print(f"refused: {refused}")


if __name__ == "__main__":
    main()
