"""BooookScore checker on llama.cpp: wall time with and without KV prefix reuse.

One ~600-word summary (by default the extractive baseline's 600-word summary
of "A Scandal in Bohemia": real sentences, deterministic) is annotated
sentence by sentence (prompt v1) with the embedded Gemma 3 270M, twice:

* prefix reuse on (llama.cpp keeps the KV cache of the previous prompt, and
  every call shares the instructions + examples + summary prefix), and
* prefix reuse off (`LlamaCppBackend(reuse_prefix=False)`: the KV cache is
  reset before every call, so each prompt is evaluated from scratch).

Both runs use a fresh in-memory journal (no answer replayed from a cache) and
one attempt per sentence by default, so they make the same calls; with v1 the
two runs interleave sentence by sentence (each on its own loaded copy of the
model), so machine load hits both alike. Printed:
calls, prompt tokens sent, prompt tokens the model actually evaluated,
output tokens, wall time, and the two ratios. Usage:

    python bench/bench_booookscore.py [--sentences N] [--annotate N] [--words 600] [--attempts 1]
        [--version v1|v2] [--summary FILE] [--quick]

`--quick` (what `make bench` runs) annotates only the first 8 sentences of
the same summary: every prompt still holds the whole summary, so each call
costs what it costs in the full run, but the first call, which no run can
reuse, weighs more in the totals.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchlib import apply_quick, book, table  # noqa: E402 (puts the repository on sys.path)

QUICK = {"annotate": 8}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def the_summary(args) -> str:
    if args.summary:
        return Path(args.summary).read_text(encoding="utf-8")
    from pipelines.summarize.extractive import extractive_summary

    story = book("doyle_scandal_in_bohemia.txt")
    return extractive_summary(story.read_text(encoding="utf-8"), args.words).text


def run_interleaved(backends: dict, summary: str, args) -> dict:
    """Annotate every sentence with each backend in turn (order alternating), so both
    modes meet the same machine load; returns mode -> (result, usage, seconds)."""
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.text import sentences
    from scoring.booookscore import BooookScoreChecker, CheckResult, SentenceAnnotation

    checkers = {name: BooookScoreChecker(RecordingLLM(b, MemoryJournal()), "v1", max_attempts=args.attempts)
                for name, b in backends.items()}
    annotations = {name: [] for name in backends}
    seconds = {name: 0.0 for name in backends}
    names = list(backends)
    for n, sentence in enumerate(sentences(summary)[: args.annotate], 1):
        for name in names if n % 2 else reversed(names):
            annotation = SentenceAnnotation(n, sentence, "unparseable")
            started = time.perf_counter()
            checkers[name].annotate_sentence(summary, annotation)
            seconds[name] += time.perf_counter() - started
            annotations[name].append(annotation)
    return {name: (CheckResult(annotations[name], "v1"), checkers[name].llm.usage, seconds[name]) for name in names}


def run_sequential(backends: dict, summary: str, args) -> dict:
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from scoring.booookscore import BooookScoreChecker

    out = {}
    for name, backend in backends.items():
        llm = RecordingLLM(backend, MemoryJournal())
        started = time.perf_counter()
        result = BooookScoreChecker(llm, args.version, max_attempts=args.attempts).check(summary)
        out[name] = (result, llm.usage, time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None, help="only the summary's first N sentences")
    parser.add_argument("--words", type=int, default=600, help="length of the extractive summary")
    parser.add_argument("--attempts", type=int, default=1, help="attempts per sentence (1: same calls in both runs)")
    parser.add_argument("--version", choices=["v1", "v2"], default="v1")
    parser.add_argument("--summary", default=None, help="annotate this summary file instead")
    parser.add_argument("--annotate", type=int, default=None,
                        help="v1: annotate only the first N sentences (the prompts still hold the whole summary)")
    parser.add_argument("--quick", action="store_true", help=f"--annotate {QUICK['annotate']}")
    args = parser.parse_args()
    apply_quick(parser, args, QUICK)
    if args.annotate and args.version != "v1":
        parser.error("--annotate works with --version v1 (v2 annotates in batches)")

    from pipelines.llm.llamacpp import LlamaCppBackend
    from pipelines.text import count_words, sentences

    summary = the_summary(args)
    if args.sentences:
        summary = " ".join(sentences(summary)[: args.sentences])
    # Two loaded copies of the model (a different context size keys a separate Llama), so the
    # runs can interleave without one clearing the other's KV cache.
    reuse = LlamaCppBackend(None, context_window=8192, reuse_prefix=True)
    fresh = LlamaCppBackend(None, context_window=8190, reuse_prefix=False)  # KV cache reset before every call
    from pipelines.llm.base import CompletionRequest

    for backend in (reuse, fresh):  # load both outside the timings
        backend.complete(CompletionRequest(messages=({"role": "user", "content": "Hello"},), max_tokens=1))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_sentences = len(sentences(summary)[: args.annotate])
    print(f"BooookScore checker ({args.version}, {args.attempts} attempt(s) per sentence), {reuse.model} on "
          f"llama.cpp, {cores} cores, load average {os.getloadavg()[0]:.1f}; summary: {count_words(summary)} words, "
          f"{len(sentences(summary))} sentences, {n_sentences} annotated")
    backends = {"prefix reuse on": reuse, "prefix reuse off": fresh}
    results = (run_interleaved if args.version == "v1" else run_sequential)(backends, summary, args)
    rows = []
    for name, (result, usage, seconds) in results.items():
        evaluated = usage.input_tokens - usage.cached_input_tokens
        rows.append([name, usage.calls, usage.input_tokens, evaluated, usage.output_tokens, seconds,
                     seconds / max(1, n_sentences), result.n_unparseable,
                     "n/a" if result.score is None else f"{100 * result.score:.1f}"])
    print()
    print(table(["mode", "calls", "prompt tok", "evaluated", "output tok", "seconds", "s/sentence", "unparseable",
                 "score"], rows, fmt=_fmt))
    (on, on_usage, on_s), (off, off_usage, off_s) = results["prefix reuse on"], results["prefix reuse off"]
    evaluated_on = max(1, on_usage.input_tokens - on_usage.cached_input_tokens)
    evaluated_off = off_usage.input_tokens - off_usage.cached_input_tokens
    same = sum(1 for a, b in zip(on.annotations, off.annotations) if (a.status, a.types) == (b.status, b.types))
    print(f"\nprompt tokens evaluated: {evaluated_off / evaluated_on:.1f}x fewer with reuse; "
          f"wall time: {off_s / on_s:.1f}x faster; same verdict on {same} of {n_sentences} sentences")


if __name__ == "__main__":
    main()
