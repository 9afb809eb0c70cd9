"""Citations and the coverage profile, where the truth is known: planted facts.

A real novel gets N invented, checkable fact sentences (names, numbers and
places found nowhere in it) inserted after sentence ends at known positions,
spread evenly over the deciles. Summaries whose fact content is known by
construction are then cited and profiled:

* `all facts`: every fact sentence, in order;
* `last 30 %`: only the facts of the last three deciles (an end-heavy summary);
* `numbers changed`: every fact with its number altered (unfaithful, but it
  still rests on the fact's passage).

Citations (`pipelines.citations`) are scored against the facts' true
positions: a citation is right when its span holds the fact's first
character. Precision: right citations / citations of fact sentences;
recall: fact sentences with a right citation / fact sentences. Measured by
method:

* `aligned`: each summary cites the whole document directly;
* `traced`: a tree by construction (chunk summaries copy their chunk's facts,
  merges copy their children's), cited through it;
* `model`, `traced` and `aligned` end to end: a grounded hierarchical run
  with citations through a scripted backend that copies fact sentences and,
  in merges, names the passage holding each (when its prompt gave it); with
  `--model`, through a real model too. Scored on the final summary's
  sentences that name exactly one fact's person (a model paraphrases), and
  every stored citation is checked to resolve to its chunk and span.

The coverage profile (`scoring.coverage`) is scored by the mean absolute
error between its per-decile shares of sentences and the truth's, and by
whether it flags the end-heavy summary (half or more of its grounded
sentences in the last 30 %).

    python bench/bench_citations.py [--book austen_persuasion.txt] [--facts 20] [--model llamacpp]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from pathlib import Path

from benchlib import book, table

NAMES = ("Ottoline Varga", "Bartholomew Quince", "Ignatia Pell", "Cassius Thornbury", "Perpetua Lusk",
         "Evander Moth", "Hyacinth Oduya", "Leopold Marrable", "Seraphina Dunwoody", "Ambrose Kettleby",
         "Clementine Ashgrove", "Thaddeus Pumfrey", "Wilhelmina Crane", "Octavius Bellweather", "Rosalind Fairweather",
         "Barnaby Quillfeather", "Philippa Grimsditch", "Lucius Penhallow", "Georgiana Trevellick", "Mortimer Blythe")
PLACES = ("Kestrel Moor", "Lower Wrexcombe", "Saint Aubyn's Quay", "Hollowmere", "Brackenfold", "Pennywhistle Cross",
          "Gallowfen", "Ashcombe Priory", "Marrowdown", "Thistlecote", "Wyvern Sands", "Cobblestone Reach")
THINGS = ("silver lanterns", "copper kettles", "bolts of indigo silk", "casks of pear cider", "brass telescopes",
          "volumes of sea charts", "crates of quinces", "walnut chess sets")
# Ten templates, each used twice: every fact has a look-alike that shares its wording but not its
# name, number or place (the trap for retrieval), while a summary of all twenty is not so repetitive
# that the degeneration check takes it for a loop (with four templates, 33 % of its 4-grams repeated).
TEMPLATES = ("{name} kept exactly {n} {thing} in the cellar of the old house at {place}.",
             "It was said that {name} once walked {n} miles from {place} in a single night.",
             "The ledger at {place} records that {name} paid {n} guineas for the lease of the mill.",
             "{name} had counted {n} {thing} on the quay at {place} before the storm broke.",
             "Every spring {name} shipped {n} {thing} down the river to {place}.",
             "The parish clerk of {place} wrote that {name} was born in a house with {n} windows.",
             "According to the innkeeper at {place}, {name} lost {n} pounds at cards in one evening.",
             "{name} planted {n} pear trees along the lane that leads to {place}.",
             "A letter from {place} claimed that {name} owned {n} {thing} and a grey mare.",
             "Nobody at {place} forgot the winter when {name} fed {n} travellers from one kitchen.")
SUMMARIES = ("all facts", "last 30 %", "numbers changed")


def plant(text: str, n: int, rng: random.Random) -> tuple[str, list[dict]]:
    """The text with n fact sentences inserted after sentence ends at evenly spread positions;
    each fact with its text, number, first character and decile in the new text."""
    facts, spots = [], []
    for i in range(n):
        at = text.find(". ", int((i + 0.5) / n * len(text)))
        spots.append(at + 2)
        number = rng.randint(101, 989)
        facts.append({"text": TEMPLATES[i % len(TEMPLATES)].format(
            name=NAMES[i % len(NAMES)], n=number, thing=THINGS[i % len(THINGS)], place=PLACES[i % len(PLACES)]),
            "number": number, "name": NAMES[i % len(NAMES)]})
    pieces, last = [], 0
    for spot, fact in zip(spots, facts):
        pieces += [text[last:spot], fact["text"] + " "]
        last = spot
    planted = "".join(pieces + [text[last:]])
    for fact in facts:
        fact["start"] = planted.index(fact["text"])
        fact["decile"] = min(9, int(10 * fact["start"] / len(planted)))
    return planted, facts


def summary_of(kind: str, facts: list[dict]) -> list[tuple[str, dict]]:
    """(sentence, the fact it rests on) of a summary whose content is known by construction."""
    if kind == "last 30 %":
        return [(f["text"], f) for f in facts if f["decile"] >= 7]
    if kind == "numbers changed":
        return [(f["text"].replace(str(f["number"]), str(f["number"] + 7)), f) for f in facts]
    return [(f["text"], f) for f in facts]


def score(cited, truth: dict[str, dict]) -> tuple[int, int, int, int]:
    """(right citations, citations, fact sentences with a right one, fact sentences) of some citations."""
    right = total = hit = 0
    by_sentence: dict[tuple, list] = {}
    for c in cited:
        if c.sentence in truth:
            by_sentence.setdefault((c.sentence_idx, c.sentence), []).append(c)
    for (_, sentence), cs in by_sentence.items():
        start = truth[sentence]["start"]
        good = [c for c in cs if c.source and c.source.start_char <= start < c.source.end_char]
        right += len(good)
        total += sum(1 for c in cs if c.source)
        hit += bool(good)
    return right, total, hit, len(by_sentence)


def row(label: str, method: str, counts: tuple[int, int, int, int]) -> list:
    right, total, hit, sentences = counts
    return [label, method, sentences, total, f"{right / total:.3f}" if total else "-",
            f"{hit / sentences:.3f}" if sentences else "-"]


def aligned_and_traced(text: str, facts: list[dict], chunks, index) -> list[list]:
    from pipelines.citations import Locator, SummaryNode, cite_summaries

    locator, rows = Locator(text), []
    last = len(chunks) - 1
    for kind in SUMMARIES:
        pairs = summary_of(kind, facts)
        node = SummaryNode("s", 0, 0, "extractive", " ".join(s for s, _ in pairs), 0, last, True)
        cited = cite_summaries([node], index, locator)["s"]
        counts = score(cited, {s: f for s, f in pairs})
        rows.append(row(kind, "aligned", counts))
    # A tree by construction: chunk summaries hold their chunk's facts (or its first sentence), merges of
    # four hold their children's sentences, up to one final summary.
    from pipelines.text import sentences as split

    nodes, level = [], []
    for chunk in chunks:
        own = [f["text"] for f in facts if chunk.start <= f["start"] < chunk.end] or split(chunk.text)[:1]
        level.append(SummaryNode(f"c{chunk.idx}", 0, chunk.idx, "chunk", " ".join(own), chunk.idx, chunk.idx))
    nodes += level
    depth = 1
    while len(level) > 1:
        level = [SummaryNode(f"m{depth}.{k}", depth, k, "merge", " ".join(n.text for n in group),
                             group[0].first_chunk, group[-1].last_chunk, False)
                 for k, group in enumerate(level[i:i + 4] for i in range(0, len(level), 4))]
        nodes += level
        depth += 1
    final = level[0]
    cited = cite_summaries(nodes, index, locator)[final.summary_id]
    rows.append(row("all facts, through a tree", "traced", score(cited, {f["text"]: f for f in facts})))
    return rows


def coverage_rows(facts: list[dict], index) -> list[list]:
    from scoring.coverage import profile

    out = []
    for kind in SUMMARIES:
        pairs = summary_of(kind, facts)
        result = profile(" ".join(s for s, _ in pairs), index)
        grounded = result.grounded
        truth = [sum(1 for _, f in pairs if f["decile"] == d) / len(pairs) for d in range(10)]
        found = [sum(1 for a in grounded if a.decile == d) / max(1, len(grounded)) for d in range(10)]
        mae = sum(abs(a - b) for a, b in zip(truth, found)) / 10
        late = sum(1 for a in grounded if a.decile >= 7) / max(1, len(grounded))
        out.append([kind, len(pairs), len(grounded), f"{mae:.3f}", f"{late:.2f}", "yes" if late >= 0.5 else "no",
                    "yes" if kind == "last 30 %" else "no"])
    return out


def scripted_backend(facts: list[dict]):
    """Copies fact sentences: a chunk summary is its chunk's facts (or its first full sentence), a merge
    its children's facts, each with the id of the passage holding it when the prompt gave one."""
    from scripted import ScriptedBackend

    from pipelines.summarize.passage_ids import given
    from pipelines.text import sentences as split

    known = {f["text"] for f in facts}

    def answer(request) -> str:
        content = request.messages[-1]["content"]
        excerpt = re.search(r"<excerpt>\n(.*?)\n</excerpt>", content, re.S)
        if excerpt:
            whole = [s for s in split(excerpt.group(1)) if s.rstrip('"\'').endswith((".", "!", "?"))]
            return " ".join([s for s in whole if s in known] or whole[:1])
        block = re.search(r"<summaries>\n(.*?)\n</summaries>", content, re.S).group(1)
        passages = re.search(r"<passages>\n(.*?)\n</passages>", content, re.S)
        given_ = given(passages.group(1)) if passages else {}
        out = []
        for sentence in split(re.sub(r"Summary \d+:\n", "", block)):
            if sentence in known:
                holding = [k for k, p in given_.items() if sentence in p]
                out.append(f"{sentence} [P{holding[0]}]" if holding else sentence)
        return " ".join(out) or split(block)[0]

    return ScriptedBackend(answer, context_window=16384)


def end_to_end(text: str, facts: list[dict], folder: Path, model: str) -> tuple[list[list], str]:
    """A grounded hierarchical run with citations, through the scripted backend or a real model: the
    final summary's citations by method, scored on the sentences that name a fact's person (a real
    model paraphrases), and a check that every stored citation resolves to its chunk and span."""
    from pipelines.documents import Document
    from pipelines.runner import RunConfig, make_backend, summarize_document
    from pipelines.store import Store
    from pipelines.citations import final_citations
    from pipelines.text import sentences as split

    store = Store(folder / "planted.duckdb")
    document = Document(path="planted.txt", text=text, kind="book", encoding="utf-8")
    config = RunConfig(method="hierarchical", model=model, chunk_size=2048, summary_words=600, grounded=True,
                       citations=True)
    backend = scripted_backend(facts) if model == "scripted" else make_backend(config)
    result = summarize_document(document, config, store, backend=backend)
    final_cited = final_citations(store, result.run_id)
    truth = {}
    for c in final_cited:
        named = [f for f in facts if f["name"] in c.sentence]
        if len(named) == 1:
            truth[c.sentence] = named[0]
    label = f"end to end, {model} ({result.n_chunks} chunks, grounded)"
    rows = [row(label, method, score([c for c in final_cited if c.method == method], truth))
            for method in ("model", "traced", "aligned")]
    sentences = len(split(result.summary))
    share = len({c.sentence_idx for c in final_cited if c.source}) / max(1, sentences)
    resolved, stored = resolving(store, result.run_id, text)
    report = (f"{label}: status {result.status}, {result.usage.calls} calls, {result.usage.input_tokens:,} prompt "
              f"tokens; {sentences} final sentences, {len(truth)} name a fact, {share:.0%} carry a citation; "
              f"{resolved} of {stored} stored citations resolve to their chunk and span")
    return rows, report


def resolving(store, run_id: str, text: str) -> tuple[int, int]:
    """(citations whose span lies inside their chunk and matches the document there, cited rows)."""
    rows = store.execute(
        "SELECT c.start_char, c.end_char, k.start_char, k.text FROM citations c LEFT JOIN chunks k "
        "ON k.run_id = c.run_id AND k.idx = c.chunk_idx WHERE c.run_id = ? AND c.chunk_idx IS NOT NULL", [run_id])
    good = sum(1 for a, b, start, chunk in rows
               if chunk is not None and start <= a < b <= start + len(chunk)
               and text[a:b] == chunk[a - start:b - start])
    return good, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", default="austen_persuasion.txt")
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--model", action="append", default=[],
                        help="also run end to end through this model spec (e.g. llamacpp, the embedded model)")
    args = parser.parse_args()

    from pipelines.chunking import chunk_text
    from pipelines.llm.tokenizers import count_cl100k
    from pipelines.retrieval import SourceIndex, passages_from_chunks

    started = time.perf_counter()
    text, facts = plant(book(args.book).read_text(encoding="utf-8"), args.facts, random.Random(args.seed))
    chunks = chunk_text(text, 2048, count_cl100k)
    index = SourceIndex(passages_from_chunks([(c.idx, c.start, c.text) for c in chunks]))
    print(f"{args.book}: {len(text.split()):,} words, {args.facts} planted facts ({args.facts / 10:g} a decile), {len(chunks)} chunks "
          f"of 2,048 cl100k tokens, {len(index.passages):,} passages\n")
    rows, reports = aligned_and_traced(text, facts, chunks, index), []
    for model in ["scripted"] + args.model:
        with tempfile.TemporaryDirectory() as folder:
            more, report = end_to_end(text, facts, Path(folder), model)
        rows += more
        reports.append(report)
    print(table(["summary", "method", "fact sentences", "citations", "precision", "recall"], rows))
    print("\n" + "\n".join(reports))
    print()
    print(table(["summary", "sentences", "grounded", "decile MAE", "share in last 30 %", "flagged end-heavy",
                 "end-heavy by construction"], coverage_rows(facts, index)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
