"""Whole runs with the embedded default model: wall time, time inside the
model vs. everything else, LLM calls and tokens, the cached re-run, and the
process's peak RSS. Every configuration runs in a fresh process.

    python bench/bench_pipeline.py                      # The Red-Headed League, both methods
    python bench/bench_pipeline.py --document PATH --methods hierarchical
    python bench/bench_pipeline.py --full               # + Persuasion (peak RSS of a novel; ~20 min)
    python bench/bench_pipeline.py --quick              # the story's first 800 words, small budgets (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import apply_quick, book, excerpt, table  # noqa: E402 (puts the repository on sys.path)

from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_SUMMARY_WORDS  # noqa: E402

QUICK_WORDS = 800
QUICK = {"chunk_size": 512, "summary_words": 120}


def quick_document(folder: Path) -> Path:
    """The Red-Headed League's first QUICK_WORDS words, as a file."""
    path = folder / f"doyle_red_headed_league_first_{QUICK_WORDS}_words.txt"
    path.write_text(excerpt(book("doyle_red_headed_league.txt").read_text(encoding="utf-8"), QUICK_WORDS), encoding="utf-8")
    return path


def one_run(document: str, method: str, db: str, extra: dict) -> dict:
    """Runs in the child process: one run, then the same run again (cached)."""
    from pipelines.runner import RunConfig, summarize_file
    from pipelines.store import Store

    config = RunConfig(method=method, **extra)
    store = Store(db)
    started = time.perf_counter()
    first = summarize_file(document, config, store)
    first_wall = time.perf_counter() - started
    started = time.perf_counter()
    second = summarize_file(document, config, store)
    second_wall = time.perf_counter() - started
    return {
        "document": Path(document).name, "method": method, "chunks": first.n_chunks,
        "wall_s": first_wall, "llm_s": first.usage.llm_seconds, "calls": first.usage.calls,
        "tokens_in": first.usage.input_tokens, "tokens_out": first.usage.output_tokens,
        "cached_wall_s": second_wall, "cached_calls": second.usage.calls, "status": first.status,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_child(document: Path, method: str, extra: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        payload = json.dumps({"document": str(document), "method": method, "db": f"{tmp}/bench.duckdb", "extra": extra})
        out = subprocess.run([sys.executable, __file__, "--child", payload], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{document.name} {method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def runs_table(rows: list[dict]) -> str:
    header = ["document", "method", "chunks", "calls", "tokens in+out", "wall s", "in model s", "outside %",
              "cached re-run s", "cached/first", "peak RSS MiB"]
    body = []
    for r in rows:
        outside = max(0.0, r["wall_s"] - r["llm_s"])
        body.append([
            r["document"], r["method"], r["chunks"], r["calls"], f"{r['tokens_in']:,}+{r['tokens_out']:,}",
            f"{r['wall_s']:.1f}", f"{r['llm_s']:.1f}", f"{100 * outside / r['wall_s']:.2f}",
            f"{r['cached_wall_s']:.2f} ({r['cached_calls']} calls)", f"{r['cached_wall_s'] / r['wall_s']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
        ])
    return table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--document", action="append", help="document(s) to run (default: The Red-Headed League)")
    parser.add_argument("--methods", default="hierarchical,incremental")
    parser.add_argument("--full", action="store_true", help="also a full novel (Persuasion), hierarchical")
    parser.add_argument("--quick", action="store_true",
                        help=f"the story's first {QUICK_WORDS} words, chunk {QUICK['chunk_size']}, "
                             f"{QUICK['summary_words']} summary words")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--summary-words", type=int, default=DEFAULT_SUMMARY_WORDS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(one_run(spec["document"], spec["method"], spec["db"], spec["extra"])))
        return
    apply_quick(parser, args, QUICK)
    extra = {"chunk_size": args.chunk_size, "summary_words": args.summary_words}
    if args.document:
        documents = [Path(d) for d in args.document]
    elif args.quick:
        documents = [quick_document(Path(tempfile.mkdtemp()))]
    else:
        documents = [book("doyle_red_headed_league.txt")]
    jobs = [(d, m) for d in documents for m in args.methods.split(",")]
    if args.full:
        jobs.append((book("austen_persuasion.txt"), "hierarchical"))
    rows = []
    for document, method in jobs:
        print(f"running {document.name} {method} ...", file=sys.stderr, flush=True)
        rows.append(in_child(document, method, extra))
    print(f"\nEmbedded Gemma 3 270M (llama.cpp), chunk {args.chunk_size} tokens, {args.summary_words} summary words; "
          f"{os.cpu_count()} cores\n")
    print(runs_table(rows))


if __name__ == "__main__":
    main()
