"""The Prefect face against the CLI's in-process runner.

1. Overhead of a flow run vs. the same work through the library (what the
   `summarize` command runs), on a short story with the embedded model.
2. A hierarchical run of about N chunks through the flow (chunk tasks in a
   window of `concurrency`, under a global concurrency limit) at concurrency
   1 vs. 4, against an OpenAI-compatible server that answers after a fixed
   delay.

    python bench/bench_flows.py [--words 1500] [--chunks 12] [--delay 0.5] [--quick]

`--quick` (what `make bench` runs): an 800-word story and 8 chunks.
Prefect's own log lines are kept to warnings so the tables stand out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from benchlib import apply_quick, book, excerpt, table  # noqa: E402

QUICK = {"words": 800, "chunks": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help=f"--words {QUICK['words']} --chunks {QUICK['chunks']}")
    args = parser.parse_args()
    apply_quick(parser, args, QUICK)
    tmp = Path(tempfile.mkdtemp(prefix="longsum-bench-flows-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    from prefect.testing.utilities import prefect_test_harness

    from fake_openai_server import FakeOpenAIServer
    from flows.summarize_flow import summarize_document
    from pipelines.runner import RunConfig, summarize_file
    from pipelines.store import Store

    story = tmp / "story.txt"
    text = book("doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    story.write_text(excerpt(text, args.words), encoding="utf-8")
    settings = dict(chunk_size=512, summary_words=120)

    started = time.perf_counter()
    cli = summarize_file(story, RunConfig(**settings), Store(tmp / "cli.duckdb"))
    cli_wall = time.perf_counter() - started

    with prefect_test_harness(server_startup_timeout=120):
        started = time.perf_counter()
        flow = summarize_document(path=str(story), db=str(tmp / "flow.duckdb"), resume=False, **settings)
        flow_wall = time.perf_counter() - started

        level_story = tmp / "level.txt"
        level_story.write_text(excerpt(text, 150 * args.chunks), encoding="utf-8")
        walls = {}
        with FakeOpenAIServer(delay=args.delay) as server:
            for concurrency in (1, 4):
                server.requests.clear()
                started = time.perf_counter()
                out = summarize_document(
                    path=str(level_story), model="openai:fake", base_url=server.base_url, chunk_size=200,
                    summary_words=40, context_window=8192, concurrency=concurrency, db=str(tmp / f"c{concurrency}.duckdb"),
                    resume=False,
                )
                walls[concurrency] = (time.perf_counter() - started, out["n_chunks"], len(server.requests))

    print(f"\n1. Flow vs. CLI runner, {args.words}-word story, embedded model, chunk 512 tokens\n")
    flow_llm = flow["usage"]["llm_seconds"]
    print(table(["face", "wall s", "LLM calls", "LLM s", "outside the model s"], [
        ["library (summarize CLI)", f"{cli_wall:.1f}", cli.usage.calls, f"{cli.usage.llm_seconds:.1f}",
         f"{cli_wall - cli.usage.llm_seconds:.1f}"],
        ["Prefect flow", f"{flow_wall:.1f}", flow["usage"]["calls"], f"{flow_llm:.1f}", f"{flow_wall - flow_llm:.1f}"],
    ]))
    print(f"\nflow / CLI wall: {flow_wall / cli_wall:.2f}; flow overhead {flow_wall - cli_wall:+.1f} s "
          "(the temporary Prefect API was already running)")
    print(f"\n2. Hierarchical run through the flow, server delay {args.delay} s per call\n")
    print(table(["concurrency", "chunks", "requests", "wall s", "ratio"],
                [[concurrency, chunks, requests, f"{wall:.2f}", f"{wall / walls[1][0]:.2f}"]
                 for concurrency, (wall, chunks, requests) in walls.items()]))


if __name__ == "__main__":
    main()
