"""The extractive baseline, old against new, side by side (issue 27 item 8).

Each implementation runs in a fresh child process: the new one from this
tree, the old one from a `git worktree` of the revision before the change
(the MiniLM-embedding baseline), so the old code stays callable only here.
For each: seconds for `extractive_summary(novel, words)` (imports and model
loading inside the call included: what a user waits for), the child's peak
RSS (VmHWM), and what the summary is made of: units that open a quotation
they do not close (a speech cut in half, `"How so?`), headings or title-case
lines, and units with more than a quarter of their tokens numeric (table
rows). The table ends with new/old ratios measured in this one run.

    .venv/bin/python bench/bench_extractive.py                  # the longest novel at hand, 585 words
    .venv/bin/python bench/bench_extractive.py --book emma.txt --words 300 --old <rev>

The default book is Emma when ../shared/data/books has it, else Pride and
Prejudice (the longest novel there). The default old revision is the parent
of the commit that took sentence embeddings out of the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, SHARED, book, table  # noqa: E402 (benchlib puts the repository on sys.path)

from peak_rss import PEAK_KIB_SOURCE  # noqa: E402

# Where the old baseline changed: a file and a string only the old version has.
OLD_MARK = ("pipelines/summarize/extractive.py", "from pipelines.embeddings import embed")

CHILD = PEAK_KIB_SOURCE + r"""
import json, sys, time
tree, path, words = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path[:0] = [tree, tree + "/tests"]
text = open(path, encoding="utf-8").read()
started = time.perf_counter()
from pipelines.summarize.extractive import extractive_summary
import pipelines
record = extractive_summary(text, words)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_mib": peak_kib() / 1024, "summary": record.text,
                  "module": pipelines.__file__}))
"""


def old_revision(mark: tuple[str, str] = OLD_MARK) -> str:
    """The last revision whose `mark[0]` holds `mark[1]`: HEAD if it still does, else the parent of
    the commit that took it out."""
    path, needle = mark
    if needle in _git("show", f"HEAD:{path}"):
        return "HEAD"
    changed = _git("log", "-1", "--format=%H", f"-S{needle}", "--", path)
    if not changed:
        raise SystemExit(f"no commit ever had {needle!r} in {path}")
    holds = needle in _git("show", f"{changed}:{path}")
    return changed if holds else f"{changed}^"


@contextlib.contextmanager
def worktree(revision: str):
    """A detached checkout of `revision`, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="longsum-old-")) / "tree"
    _git("worktree", "add", "--detach", str(folder), revision)
    try:
        yield folder
    finally:
        _git("worktree", "remove", "--force", str(folder))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def run_child(source: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", source, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"child failed ({args[0]}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def locate(summary: str, text: str) -> list[tuple[int, int]]:
    """Where each sentence of summary lies in text (character spans, in order; whitespace may differ)."""
    from pipelines.text import sentences

    spans, at = [], 0
    for sentence in sentences(summary):
        pattern = re.compile(r"\s+".join(map(re.escape, sentence.split())))
        found = pattern.search(text, at) or pattern.search(text)
        if found:
            spans.append((found.start(), found.end()))
            at = found.end()
    return spans


def make_up(summary: str, text: str, titles: list[str]) -> dict:
    """What the summary is made of. A passage is a run of its sentences that are neighbours in the
    text; it cuts a quotation when the text's quotation is open where it starts or ends (within
    the paragraph). Headings: a sentence in capitals or title case, with no sentence end, or
    beginning with one of the document's section titles. Table rows: over a quarter of the
    tokens numeric."""
    from pipelines.text import sentences

    spans = locate(summary, text)
    passages: list[list[int]] = []
    for start, end in spans:
        if passages and not text[passages[-1][1]:start].strip():
            passages[-1][1] = end
        else:
            passages.append([start, end])

    def open_at(position: int) -> bool:
        """Inside a quotation that closes within its paragraph (one that runs on past the
        paragraph, a story told over many, can only be cut)."""
        start = text.rfind("\n\n", 0, position) + 1
        end = text.find("\n\n", position)
        paragraph, before = text[start:end if end >= 0 else len(text)], text[start:position]
        straight = before.count('"') % 2 == 1 and paragraph.count('"') % 2 == 0
        curly = before.count("\u201c") > before.count("\u201d") and paragraph.count("\u201c") == paragraph.count("\u201d")
        return straight or curly

    cut = sum(1 for start, end in passages if open_at(start) or open_at(end))
    units = sentences(summary)
    headings = sum(1 for u in units if not re.search(r"[.!?…][\"'”’)]*$", u)
                   or any(u.startswith(t + " ") for t in titles))
    numeric = sum(1 for u in units if sum(any(c.isdigit() for c in t) for t in u.split()) > 0.25 * len(u.split()))
    deciles = sorted({min(9, int(10 * start / max(1, len(text)))) for start, _ in spans})
    return {"words": len(summary.split()), "sentences": len(units), "found": len(spans), "passages": len(passages),
            "cut quotations": cut, "headings": headings, "table rows": numeric, "deciles": len(deciles)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_book = "emma.txt" if (SHARED / "books" / "emma.txt").is_file() else "austen_prideprejudice.txt"
    parser.add_argument("--book", default=default_book, help="a file of ../shared/data/books or tests/data/books, or a path")
    parser.add_argument("--words", type=int, default=585, help="the summary's word budget (the default --summary-words)")
    parser.add_argument("--old", default=None, help="the old revision (default: before the embeddings left)")
    args = parser.parse_args()
    path = Path(args.book) if Path(args.book).is_file() else book(args.book)
    from pipelines.documents import load_document

    document = load_document(path)  # this tree's reader for both: the comparison is of the selection
    titles = [s.title for s in document.sections]
    revision = args.old or old_revision()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "document.txt"
        plain.write_text(document.text, encoding="utf-8")
        with worktree(revision) as old_tree:
            old = run_child(CHILD, str(old_tree), str(plain), str(args.words))
            assert old["module"].startswith(str(old_tree)), old["module"]
        new = run_child(CHILD, str(ROOT), str(plain), str(args.words))
    assert new["module"].startswith(str(ROOT)), new["module"]
    print(f"{path.name}: {len(document.text.split()):,} words, summary budget {args.words} words; "
          f"old = {_git('rev-parse', '--short', revision)}, new = this tree\n")
    rows = []
    for name, result in (("old (MiniLM embeddings)", old), ("new (TF-IDF centroid)", new)):
        m = make_up(result["summary"], document.text, titles)
        rows.append([name, f"{result['seconds']:.1f}", f"{result['peak_mib']:.0f}", m["words"], m["sentences"],
                     m["passages"], m["cut quotations"], m["headings"], m["table rows"], m["deciles"]])
    rows.append(["new / old", f"{new['seconds'] / old['seconds']:.3f}", f"{new['peak_mib'] / old['peak_mib']:.3f}",
                 "", "", "", "", "", "", ""])
    print(table(["implementation", "seconds", "peak MiB", "words", "sentences", "passages", "cut quotations",
                 "headings", "table rows", "deciles"], rows))
    for name, result in (("old", old), ("new", new)):
        print(f"\n{name}: {result['summary'][:700]}{' ...' if len(result['summary']) > 700 else ''}")


if __name__ == "__main__":
    main()
