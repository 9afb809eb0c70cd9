"""The corpus flow at scale: no slot idles on a mixed corpus, and the flow's
memory does not grow with the corpus.

  mixed: one whole novel and eight SQuALITY stories, 2 documents at a time,
         against the test server answering each call after 0.5 s: the wall
         time against its ideal, max(the novel alone, all runs' time / 2).
  rss:   the flow process's peak RSS on 30 and on 300 small documents.

Each flow runs in a fresh Python process (with Prefect's temporary API, not
counted) and reports its own peak RSS (VmHWM); times come from the store:
the evaluation's start to its last result.

    python bench/bench_corpus.py [--novel austen_persuasion.txt] [--stories 8] [--delay 0.5] [--small 30,300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from benchlib import SHARED, LOCAL, book, data_file, excerpt, table  # noqa: E402
from fake_openai_server import FakeOpenAIServer  # noqa: E402
from peak_rss import PEAK_KIB_SOURCE  # noqa: E402

CHILD = PEAK_KIB_SOURCE + """
import json, os, sys
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from flows.evaluate_flow import evaluate_corpus
args = json.loads(sys.argv[1])
evaluate_corpus(**args)
print(json.dumps({"peak_kib": peak_kib()}))
"""


def run_flow(source: Path, db: Path, server: FakeOpenAIServer, concurrency: int, call_concurrency: int) -> dict:
    config = {"method": "hierarchical", "model": "openai:fake", "base_url": server.base_url,
              "concurrency": call_concurrency, "chunk_size": 2048, "summary_words": 300}
    args = {"source": str(source), "configs": [config], "metrics": [], "db": str(db), "concurrency": concurrency,
            "report": str(db.with_suffix(".html"))}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(db.parent), "OPENAI_API_KEY": "sk-bench",
           "PREFECT_HOME": str(db.parent / "prefect"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env,
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"]
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        wall = con.execute("SELECT epoch(max(r.finished_at)) - epoch(min(c.started_at)) "
                           "FROM corpus_results r JOIN corpora c USING (corpus_id)").fetchone()[0]
        runs = con.execute("SELECT params->>'item', seconds, status FROM runs ORDER BY seconds DESC").fetchall()
    return {"peak_kib": peak, "wall": wall, "runs": runs}


def stories(count: int) -> list[tuple[str, str]]:
    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(f"squality-{r['metadata']['passage_id']}.txt", r["document"]) for r in rows[:count]]


def mixed(args, work: Path) -> list[list]:
    folder = work / "mixed"
    folder.mkdir()
    novel = book(args.novel)
    (folder / novel.name).write_text(novel.read_text(encoding="utf-8"), encoding="utf-8")
    for name, text in stories(args.stories):
        (folder / name).write_text(text, encoding="utf-8")
    alone = work / "alone"
    alone.mkdir()
    (alone / novel.name).write_text(novel.read_text(encoding="utf-8"), encoding="utf-8")
    with FakeOpenAIServer(delay=args.delay) as server:
        novel_alone = run_flow(alone, work / "alone.duckdb", server, 1, args.call_concurrency)
    with FakeOpenAIServer(delay=args.delay) as server:
        together = run_flow(folder, work / "mixed.duckdb", server, 2, args.call_concurrency)
    total = sum(seconds for _, seconds, _ in together["runs"])
    ideal = max(novel_alone["wall"], total / 2)
    return [[f"{novel.name} + {args.stories} SQuALITY stories", len(together["runs"]), round(novel_alone["wall"], 1),
             round(total, 1), round(ideal, 1), round(together["wall"], 1), round(together["wall"] / ideal, 3)]]


def rss(args, work: Path) -> list[list]:
    rows = []
    text = book("doyle_red_headed_league.txt").read_text(encoding="utf-8")
    for count in args.small:
        folder = work / f"small{count}"
        folder.mkdir()
        for n in range(count):
            start = (n * 997) % (len(text) - 3000)
            (folder / f"doc{n:04d}.txt").write_text(excerpt(text[start:], 200), encoding="utf-8")
        with FakeOpenAIServer(delay=0.0) as server:
            result = run_flow(folder, work / f"small{count}.duckdb", server, 4, 1)
        rows.append([count, round(result["wall"], 1), round(result["peak_kib"] / 1024, 1)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--novel", default="austen_persuasion.txt")
    parser.add_argument("--stories", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the test server takes per call")
    parser.add_argument("--call-concurrency", type=int, default=4)
    parser.add_argument("--small", type=lambda s: [int(x) for x in s.split(",")], default=[30, 300])
    parser.add_argument("--only", choices=["mixed", "rss"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="longsum-bench-corpus-") as folder:
        work = Path(folder)
        if args.only in (None, "mixed"):
            print(table(["corpus", "runs", "novel alone s", "sum of runs s", "ideal s", "wall s", "wall / ideal"],
                        mixed(args, work)))
            print()
        if args.only in (None, "rss"):
            peaks = rss(args, work)
            print(table(["documents", "wall s", "flow peak RSS MiB"], peaks))
            print(f"\npeak RSS ratio {peaks[-1][0]} / {peaks[0][0]} documents: {peaks[-1][2] / peaks[0][2]:.2f}")


if __name__ == "__main__":
    main()
