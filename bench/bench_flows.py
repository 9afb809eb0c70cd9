"""The Prefect face against the library it runs.

1. A whole story through the `summarize-document` flow (each workflow step a
   Prefect task) vs. the library's in-process run (what `summarize FILE`
   runs), embedded model, side by side in one process; and the fixed cost of
   a flow run (an extractive run of a short text: no model, almost no work).
2. `evaluate_corpus` over 8 SQuALITY stories x 2 methods against an
   OpenAI-compatible test server that answers after `--delay` seconds: one
   document at a time (thread runner, concurrency 1) vs. fanned out on a
   2-worker Dask `LocalCluster` (8 threads each, 16 document tasks at once).

    python bench/bench_flows.py [--story doyle_scandal_in_bohemia.txt] [--delay 0.5] [--quick]

`--quick` (what `make bench` runs): the story's first 800 words.
Prefect's own log lines are kept to warnings so the tables stand out.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from benchlib import LOCAL, SHARED, apply_quick, book, excerpt, table  # noqa: E402

QUICK = {"words": 800}
STORIES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story", default="doyle_scandal_in_bohemia.txt")
    parser.add_argument("--words", type=int, default=0, help="only the story's first N words (0: all of it)")
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--skip-model", action="store_true", help="only the corpus fan-out (no embedded model)")
    parser.add_argument("--skip-fan-out", action="store_true", help="only the flow vs. the library")
    parser.add_argument("--quick", action="store_true", help=f"--words {QUICK['words']}")
    args = parser.parse_args()
    apply_quick(parser, args, QUICK)
    tmp = Path(tempfile.mkdtemp(prefix="longsum-bench-flows-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        if not args.skip_model:
            flow_vs_library(tmp, args)
        if not args.skip_fan_out:
            corpus_fan_out(tmp, args.delay)


def flow_vs_library(tmp: Path, args) -> None:
    from flows.summarize_flow import summarize_document_flow
    from pipelines.runner import RunConfig, summarize_file
    from pipelines.store import Store

    text = book(args.story).read_text(encoding="utf-8")
    story = tmp / args.story
    story.write_text(excerpt(text, args.words) if args.words else text, encoding="utf-8")
    short = tmp / "short.txt"
    short.write_text(excerpt(text, 200), encoding="utf-8")

    started = time.perf_counter()
    library = summarize_file(story, RunConfig(), Store(tmp / "library.duckdb"))
    library_wall = time.perf_counter() - started
    started = time.perf_counter()
    flow = summarize_document_flow(path=str(story), db=str(tmp / "flow.duckdb"))
    flow_wall = time.perf_counter() - started

    fixed = {}
    for face in ("library", "flow"):
        started = time.perf_counter()
        if face == "library":
            summarize_file(short, RunConfig(method="extractive"), Store(tmp / "fixed-library.duckdb"))
        else:
            summarize_document_flow(path=str(short), method="extractive", db=str(tmp / "fixed-flow.duckdb"))
        fixed[face] = time.perf_counter() - started

    words = len(story.read_text(encoding="utf-8").split())
    print(f"\n1. {args.story} ({words} words), embedded model, default settings: flow vs. library\n")
    print(table(["face", "wall s", "chunks", "LLM calls", "LLM s"], [
        ["library (summarize FILE)", f"{library_wall:.1f}", library.n_chunks, library.usage.calls,
         f"{library.usage.llm_seconds:.1f}"],
        ["summarize-document flow", f"{flow_wall:.1f}", flow["n_chunks"], flow["usage"]["calls"],
         f"{flow['usage']['llm_seconds']:.1f}"],
    ]))
    print(f"\nflow / library wall: {flow_wall / library_wall:.3f}; same final summary: "
          f"{flow['summary'] == library.summary}")
    print(f"fixed cost of a run (200 words, extractive): library {fixed['library']:.2f} s, flow {fixed['flow']:.2f} s "
          f"(the temporary Prefect API was already running)")


def corpus_fan_out(tmp: Path, delay: float) -> None:
    import json

    from dask.distributed import LocalCluster

    from fake_openai_server import FakeOpenAIServer
    from flows.evaluate_flow import evaluate_corpus

    shared = (SHARED / "squality" / "dev.jsonl").is_file()
    data = SHARED / "squality" / "dev.jsonl" if shared else LOCAL / "squality" / "dev_subset.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    source = tmp / "squality.jsonl"
    # Without ../shared, the 3 local stories are repeated under new ids to make 8.
    picked = [dict(rows[i % len(rows)], metadata={"passage_id": f"{rows[i % len(rows)]['metadata']['passage_id']}-{i}"})
              for i in range(STORIES)]
    source.write_text("\n".join(json.dumps(row) for row in picked) + "\n", encoding="utf-8")
    walls = {}
    with FakeOpenAIServer(delay=delay) as server:
        configs = [{"method": m, "model": "openai:fake", "base_url": server.base_url, "chunk_size": 1024,
                    "summary_words": 150, "context_window": 8192, "concurrency": 4}
                   for m in ("hierarchical", "incremental")]
        started = time.perf_counter()
        sequential = evaluate_corpus(source=str(source), configs=configs, metrics=[], db=str(tmp / "one.duckdb"),
                                     concurrency=1)
        walls["one document at a time (threads)"] = (time.perf_counter() - started, len(server.requests), sequential)
        server.requests.clear()
        with LocalCluster(n_workers=2, threads_per_worker=8, processes=True, dashboard_address=None) as cluster:
            started = time.perf_counter()
            fanned = evaluate_corpus(source=str(source), configs=configs, metrics=[], db=str(tmp / "dask.duckdb"),
                                     dask_address=cluster.scheduler_address, concurrency=2 * 8)
            walls["16 at once (2-worker LocalCluster, 8 threads each)"] = (time.perf_counter() - started, len(server.requests), fanned)
    base = next(iter(walls.values()))[0]
    print(f"\n2. evaluate_corpus: {STORIES} SQuALITY stories{'' if shared else ' (3 local ones, repeated)'} x "
          f"hierarchical, incremental; server delay {delay} s\n")
    print(table(["how", "wall s", "requests", "runs ok", "ratio"], [
        [how, f"{wall:.1f}", requests, sum(r["ok"] + r["degraded"] for r in result), f"{wall / base:.3f}"]
        for how, (wall, requests, result) in walls.items()
    ]))


if __name__ == "__main__":
    main()
