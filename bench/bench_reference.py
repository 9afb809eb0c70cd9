"""Side by side with the BooookScore reference scripts (lilakk/BooookScore).

The reference was run here on doyle_scandal_in_bohemia.txt (6 chunks of
2,048 cl100k tokens, max context 8,192, its default 900-token summary limit)
against the embedded Gemma model behind llama-cpp-python's OpenAI-compatible
server; its figures (Gemma tokens, as the server counted them) are below.
This script runs longsum's side with the same settings, model and server,
then its BooookScore checker on the hierarchical summary, and prints both.

    python bench/bench_reference.py [--document PATH] [--methods hierarchical,incremental]
        [--checker v1|v2] [--checker-sentences N] [--quick]

`--quick` (what `make bench` runs) gives longsum's side the story's first
2,900 words only (two chunks at these settings), the hierarchical workflow
only, and the checker on the summary's first 6 sentences; settings, model
and server are the same. The reference's figures are for the whole story,
so the quick table shows longsum's retries, salvaged answers and token
counts beside them but no ratio; the comparison is the full run
(`make bench-full`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from benchlib import apply_quick, book, excerpt, table  # noqa: E402 (puts the repository on sys.path)
from llama_server import llama_server  # noqa: E402 (tests/, on sys.path through benchlib)

METHODS = ("hierarchical", "incremental")
QUICK_WORDS = 2900
QUICK = {"methods": "hierarchical", "checker_sentences": 6}

REFERENCE = {
    "hierarchical": {"seconds": 683, "requests": 32, "prompt": 73_560, "completion": 20_218,
                     "note": "25 validity retries; 28 of 32 answers hit max_tokens; final merge never passed its check"},
    "incremental": {"seconds": 850, "requests": 30, "prompt": 43_303, "completion": 26_113,
                    "note": "crashed as shipped; figures after a patch"},
    "checker": {"note": "never finished (v1 retries without bound; v2 prompt + max_tokens overflowed the context)"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document", default=None)
    parser.add_argument("--checker", default="v1", choices=["v1", "v2"])
    parser.add_argument("--methods", default=",".join(METHODS), help="workflows to run, comma-separated")
    parser.add_argument("--checker-sentences", type=int, default=None,
                        help="check only the hierarchical summary's first N sentences")
    parser.add_argument("--quick", action="store_true",
                        help=f"the story's first {QUICK_WORDS} words, --methods {QUICK['methods']}, "
                             f"--checker-sentences {QUICK['checker_sentences']}")
    args = parser.parse_args()
    apply_quick(parser, args, QUICK)
    methods = [m for m in args.methods.split(",") if m]
    if "hierarchical" not in methods or set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}; the checker needs hierarchical")
    from pipelines.llm.recording import RecordingLLM
    from pipelines.runner import RunConfig, make_backend, summarize_file
    from pipelines.store import DuckDBJournal, Store
    from pipelines.text import sentences
    from scoring.booookscore import BooookScoreChecker

    document = Path(args.document) if args.document else book("doyle_scandal_in_bohemia.txt")
    tmp = Path(tempfile.mkdtemp(prefix="longsum-reference-"))
    if args.quick:
        text = excerpt(document.read_text(encoding="utf-8"), QUICK_WORDS)
        document = tmp / f"{document.stem}_first_{QUICK_WORDS}_words.txt"
        document.write_text(text, encoding="utf-8")
    store = Store(tmp / "reference.duckdb")
    server = contextlib.ExitStack()
    base_url = server.enter_context(llama_server(8192, alias="gemma-3-270m", startup_s=240))
    rows, summaries = {}, {}
    try:
        for method in methods:
            config = RunConfig(method=method, model="openai:gemma-3-270m", base_url=base_url, context_window=8192,
                               chunk_size=2048, summary_words=585)
            started = time.perf_counter()
            result = summarize_file(document, config, store)
            wall = time.perf_counter() - started
            ((retries,),) = store.execute(
                "SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND NOT ends_with(step, '#1')",
                [result.run_id])
            ((hit_max,),) = store.execute(
                "SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND finish_reason = 'length'",
                [result.run_id])
            rows[method] = {
                "seconds": wall, "requests": result.usage.calls, "prompt": result.usage.input_tokens,
                "completion": result.usage.output_tokens, "chunks": result.n_chunks,
                "note": f"{retries} retries; {hit_max} answers hit max_tokens (salvaged); "
                        f"{result.degraded_summaries} degraded summaries; status {result.status}",
            }
            summaries[method] = result
        backend = make_backend(RunConfig(model="openai:gemma-3-270m", base_url=base_url, context_window=8192))
        llm = RecordingLLM(backend, DuckDBJournal(store), run_id=summaries["hierarchical"].run_id)
        summary = summaries["hierarchical"].summary
        checker = BooookScoreChecker(llm, args.checker)
        started = time.perf_counter()
        check = checker.check(summary, first=args.checker_sentences)
        checker_wall = time.perf_counter() - started
    finally:
        server.close()

    if args.quick:
        print(f"\nquick: longsum's side on the first {QUICK_WORDS} words only; the reference rows are the whole "
              "story (6 chunks), so they are context, not a comparison (that is `make bench-full`)")
    print(f"\n{document.name}: {summaries['hierarchical'].n_chunks} chunks of 2,048 cl100k tokens, context 8,192, "
          f"900-token summary limit; embedded Gemma 3 270M behind llama-cpp-python's server; {os.cpu_count()} cores\n")
    body = []
    for method in methods:
        ref, ours = REFERENCE[method], rows[method]
        for side, r in (("reference", ref), ("longsum", ours)):
            body.append([method, side, f"{r['seconds']:.0f}", r["requests"], f"{r['prompt']:,}", f"{r['completion']:,}",
                         f"{r['prompt'] + r['completion']:,}", r["note"]])
        if not args.quick:  # the quick run's reference figures are for the whole story: no ratio
            share = (ours["prompt"] + ours["completion"]) / (ref["prompt"] + ref["completion"])
            body.append([method, "longsum / reference", f"{ours['seconds'] / ref['seconds']:.2f}", "", "", "",
                         f"{share:.2f}", ""])
    score = "none" if check.score is None else f"{100 * check.score:.2f}"
    checked_part = f" (the first of the summary's {len(sentences(summary))})" if args.checker_sentences else ""
    body.append(["checker", "reference", "-", "-", "-", "-", "-", REFERENCE["checker"]["note"]])
    body.append([f"checker ({args.checker})", "longsum", f"{checker_wall:.0f}", llm.usage.calls,
                 f"{llm.usage.input_tokens:,}", f"{llm.usage.output_tokens:,}",
                 f"{llm.usage.input_tokens + llm.usage.output_tokens:,}",
                 f"finished: BooookScore {score} over {check.n_judged} of {check.n_sentences} sentences{checked_part} "
                 f"({check.n_unparseable} unparseable)"])
    print(table(["workflow", "side", "wall s", "requests", "prompt tokens", "completion tokens", "total", "notes"], body))


if __name__ == "__main__":
    main()
