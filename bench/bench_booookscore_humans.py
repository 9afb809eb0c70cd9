"""BooookScore checker against the paper's human annotations.

The released BooookScore "v2" annotations (../shared/data/booookscore, else
tests/data/booookscore) hold, for 100 books, every sentence of a model's
summary with the annotator's questions and error types. This script gives
the same sentences, in the same summary, to longsum's checker (prompt v1,
one call per sentence, the whole summary first in every prompt) and compares
its flags with the humans':

* flagged-sentence rate (the checker's and the annotators'), per summary and pooled;
* sentence-level agreement: accuracy, precision / recall of the checker's
  flags against the human ones, and Cohen's kappa;
* unparseable answers (left out of the agreement, counted in the table).

Summaries are taken in a fixed order: from each file named, its books sorted
by name, skipping those with more than --max-sentences sentences, --books of
them per file. Calls are journaled in --cache-db (a DuckDB file): a re-run
replays them, so a stopped run resumes where it stopped. Usage:

    python bench/bench_booookscore_humans.py [--file chatgpt-2048-inc] [--books 2] [--max-sentences 25]
        [--model llamacpp] [--attempts 3] [--cache-db PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import LOCAL, SHARED, data_file, table  # noqa: E402 (puts the repository on sys.path)

FILES = ("gpt4-2048-hier", "chatgpt-2048-hier", "chatgpt-2048-inc")


def kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    pa = sum(a for a, _ in pairs) / n
    pb = sum(b for _, b in pairs) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    return None if expected >= 1 else (observed - expected) / (1 - expected)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", action="append", choices=FILES, default=None,
                        help="released annotation file(s) (default: chatgpt-2048-inc)")
    parser.add_argument("--books", type=int, default=2, help="summaries per file")
    parser.add_argument("--max-sentences", type=int, default=25, help="skip summaries longer than this")
    parser.add_argument("--model", default=None, help="the annotator (default: the embedded default model)")
    parser.add_argument("--attempts", type=int, default=3, help="attempts per sentence while the answer does not parse")
    parser.add_argument("--cache-db", type=Path, default=None, help="DuckDB file journaling the calls (resumable)")
    parser.add_argument("--json", type=Path, default=None, help="also write every sentence's verdicts here")
    args = parser.parse_args(argv)

    from pipelines.defaults import DEFAULT_MODEL
    from pipelines.embeddings import offline_environment
    from pipelines.llm import resolve
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from scoring.booookscore import BooookScoreChecker, SentenceAnnotation, load_released

    offline_environment()
    backend = resolve(args.model or DEFAULT_MODEL)
    if args.cache_db is not None:
        from pipelines.store import DuckDBJournal, Store

        journal = DuckDBJournal(Store(args.cache_db))
    else:
        journal = MemoryJournal()
    llm = RecordingLLM(backend, journal)
    checker = BooookScoreChecker(llm, "v1", max_attempts=args.attempts)
    rows, pairs, detail = [], [], []
    for name in args.file or ["chatgpt-2048-inc"]:
        path = data_file(SHARED / "booookscore" / f"{name}-cleaned.json", LOCAL / "booookscore" / f"{name}-cleaned.json")
        # The released sentence_num restarts within a summary (per merged piece), so
        # load_released's order (by sentence_num) is not the summary's: take the file's.
        order = json.loads(path.read_text(encoding="utf-8"))
        books = sorted((b for b in load_released(path) if len(b.annotations) <= args.max_sentences),
                       key=lambda b: b.name)[: args.books]
        for book in books:
            by_text = {a.sentence: a for a in book.annotations}
            book.annotations = [by_text[str(entry.get("sentence") or key)] for key, entry in order[book.name].items()]
            for n, a in enumerate(book.annotations, 1):
                a.sentence_num = n
            summary = " ".join(a.sentence for a in book.annotations)
            started = time.perf_counter()
            ours = []
            for human in book.annotations:
                mine = SentenceAnnotation(human.sentence_num, human.sentence, "unparseable")
                checker.annotate_sentence(summary, mine)
                ours.append(mine)
                print("." if mine.status == "ok" else "?", end="", file=sys.stderr, flush=True)
            seconds = time.perf_counter() - started
            judged = [(bool(m.flagged), bool(h.flagged)) for m, h in zip(ours, book.annotations) if m.flagged is not None]
            pairs += judged
            human_flags = sum(bool(h.flagged) for h in book.annotations)
            rows.append([name, book.name, len(ours), human_flags, sum(bool(m.flagged) for m in ours),
                         sum(m.status == "unparseable" for m in ours), sum(a == b for a, b in judged), round(seconds)])
            detail += [{"file": name, "book": book.name, "n": h.sentence_num, "sentence": h.sentence,
                        "human": bool(h.flagged), "human_types": list(h.types), "checker": m.flagged,
                        "checker_types": list(m.types), "checker_questions": m.questions, "answer": m.answer}
                       for m, h in zip(ours, book.annotations)]
            print(f"\n  {rows[-1]}", file=sys.stderr, flush=True)
    n = sum(r[2] for r in rows)
    human = sum(r[3] for r in rows)
    flagged = sum(r[4] for r in rows)
    tp = sum(a and b for a, b in pairs)
    k = kappa(pairs)
    print(f"\nBooookScore checker (v1, {args.attempts} attempt(s)) with {backend.backend}:{backend.model} "
          f"against the released human annotations; {len(rows)} summaries, {n} sentences\n")
    print(table(["file", "book", "sentences", "human flagged", "checker flagged", "unparseable", "agree", "s"],
                rows + [["ALL", "", n, human, flagged, sum(r[5] for r in rows), sum(r[6] for r in rows),
                         sum(r[7] for r in rows)]]))
    judged = len(pairs)
    print(f"\nflagged rate: checker {flagged / max(1, n):.2f}, humans {human / max(1, n):.2f}; on the {judged} judged "
          f"sentences accuracy {sum(a == b for a, b in pairs) / max(1, judged):.2f}, "
          f"precision {tp / max(1, sum(a for a, _ in pairs)):.2f} and recall {tp / max(1, sum(b for _, b in pairs)):.2f} "
          f"of the checker's flags against the humans', Cohen's kappa {'n/a' if k is None else f'{k:.2f}'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "sentences": detail}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
