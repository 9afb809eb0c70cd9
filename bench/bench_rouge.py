"""ROUGE speed: longsum's fast path against rouge-score, same numbers.

Table 1: 2,000-word pairs (consecutive 2,000-word stretches of Pride and
Prejudice, split into sentences as longsum does), each ROUGE type timed alone
and then all four in one scorer, with rouge-score's RougeScorer and with
longsum's FastRouge, measured side by side in this run. longsum's time is "cold": a new scorer per pair and the
stemmer's memo cleared, so tokenization and stemming are paid every time.

Table 2: SQuALITY dev, summaries vs references: each plot answer scored as a
summary against the story's three other answers (all four ROUGE types at
once, longsum's `RougeScorer.score_one` with its max/mean over references),
in pairs per second; rouge-score on the first --reference-stories stories
(it is slow), longsum on all of them, with the largest difference between
their numbers.

Data comes from ../shared/data when present, else from the copies in
tests/data. Usage:

    python bench/bench_rouge.py [--pairs 2] [--words 2000] [--reference-stories 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from benchlib import LOCAL, SHARED, book, data_file, table  # noqa: E402 (puts the repository on sys.path)
TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")




def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:,.3f}"
    return str(value)


def cold_fast(rouge_types: list[str]):
    """A new scorer with the stemmer's memo cleared: nothing carried over."""
    from scoring import rouge

    rouge._stemmer.cache_clear()
    return rouge.FastRouge(rouge_types)


def long_pairs(n_pairs: int, words: int) -> list[tuple[str, str]]:
    from scoring.rouge import prepare

    text = book("austen_prideprejudice.txt")
    tokens = text.read_text(encoding="utf-8").split()
    pairs, start = [], 5000
    for _ in range(n_pairs):
        a = " ".join(tokens[start:start + words])
        b = " ".join(tokens[start + words:start + 2 * words])
        pairs.append((prepare(a), prepare(b)))
        start += 2 * words
    return pairs


def bench_long(n_pairs: int, words: int) -> list[list]:
    from scoring.rouge import reference_scorer

    pairs = long_pairs(n_pairs, words)
    rows = []
    for rouge_types in [[t] for t in TYPES] + [list(TYPES)]:
        slow_scorer = reference_scorer(rouge_types)
        slow = fast = 0.0
        diff = 0.0
        for target, prediction in pairs:
            started = time.perf_counter()
            expected = slow_scorer.score(target, prediction)
            slow += time.perf_counter() - started
            started = time.perf_counter()
            got = cold_fast(rouge_types).score(target, prediction)
            fast += time.perf_counter() - started
            for t in rouge_types:
                diff = max(diff, abs(got[t].precision - expected[t].precision), abs(got[t].recall - expected[t].recall),
                           abs(got[t].fmeasure - expected[t].fmeasure))
        name = rouge_types[0] if len(rouge_types) == 1 else "all four, one scorer"
        rows.append([name, slow / len(pairs), fast / len(pairs), f"{slow / fast:.1f}x", _diff(diff)])
    return rows


def _diff(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def squality_items() -> list[tuple[str, list[str]]]:
    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        answers = [r["response_text"] for r in row["questions"][0]["responses"]]
        for i, answer in enumerate(answers):
            items.append((answer, answers[:i] + answers[i + 1:]))
    return items, path


def bench_squality(reference_stories: int) -> tuple[list[list], str]:
    from scoring.rouge import RougeScorer, prepare, reference_scorer

    items, path = squality_items()
    fast_scorer = RougeScorer()
    started = time.perf_counter()
    fast_results = [fast_scorer.score_one(p, refs) for p, refs in items]
    fast_time = time.perf_counter() - started
    n_pairs = sum(len(refs) for _, refs in items)

    subset = items[: 4 * reference_stories]
    slow_scorer = reference_scorer()
    started = time.perf_counter()
    diff = 0.0
    for (prediction, refs), ours in zip(subset, fast_results):
        for ref, mine in zip(refs, ours.per_reference):
            theirs = slow_scorer.score(prepare(ref), prepare(prediction))
            for t in TYPES:
                diff = max(diff, abs(theirs[t].fmeasure - mine[t].fmeasure), abs(theirs[t].precision - mine[t].precision))
    slow_time = time.perf_counter() - started
    slow_pairs = sum(len(refs) for _, refs in subset)
    rows = [
        ["rouge-score", slow_pairs, slow_time, slow_pairs / slow_time, ""],
        ["longsum (fast)", n_pairs, fast_time, n_pairs / fast_time, _diff(diff)],
    ]
    return rows, f"{path.name}: {len(items) // 4} stories, {len(items)} summaries x 3 references"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="2,000-word pairs for table 1")
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--reference-stories", type=int, default=5,
                        help="SQuALITY stories scored by rouge-score too (it is slow)")
    args = parser.parse_args()

    import rouge_score.rouge_scorer  # noqa: F401 - import cost (nltk) outside the timings

    print(f"ROUGE speed ({platform.processor() or platform.machine()}, {_cores()} cores), stemming on")
    print(f"\n{args.words}-word pairs, seconds per pair (mean of {args.pairs}); longsum timed cold")
    rows = bench_long(args.pairs, args.words)
    print(table(["type", "rouge-score s", "longsum s", "speed-up", "max |diff|"], rows, fmt=_fmt))
    rows, what = bench_squality(args.reference_stories)
    print(f"\nSQuALITY dev, summaries vs references ({what}); all four types per pair")
    print(table(["implementation", "pairs", "seconds", "pairs/s", "max |diff|"], rows, fmt=_fmt))
    print(f"speed-up {rows[1][3] / rows[0][3]:.0f}x")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
