"""Citations: the source each sentence of each summary rests on.

Every sentence of every summary of a run (chunk summaries, merges,
incremental updates and their compressions, the final summary) gets the
passages it rests on, each with its chunk, its character span in the
document, and a locator a reader can follow: the section (chapter, heading,
function) for structured documents and the line range for code.

How a citation is made, recorded in its `method`:

* `aligned`: the sentence is matched against the passages of the chunks its
  summary was given, and only those (`pipelines.retrieval`: MiniLM and BM25
  fused by rank, then pinned by `pin`). A chunk summary can only cite its own chunk.
* `traced`: a sentence of a merge or an update is matched against the
  sentences of the summaries it was written from, and inherits their
  citations, so a final summary's sentence leads through the tree to the
  chunks its children cited. When no child sentence supports it (new
  wording, or content of an update's new chunk), it is aligned instead.
* `model`: a grounded merge's model named the passages of its prompt a
  sentence rests on (`pipelines.summarize.passage_ids`); ids the prompt did
  not give are dropped and counted (`dropped`, on the sentence's first row).
  A sentence that names none is traced or aligned as above.
* `unsupported`: nothing it was given supports it (no shared content word,
  or a cosine under `SUPPORT_THRESHOLD` from a passage that does not hold
  it word for word). One row, with no chunk: never a guess.

Rows land in the `citations` table, one per (sentence, passage), replaced
whenever the run is cited again.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from pipelines.retrieval import SUPPORT_THRESHOLD, SourceIndex, TextIndex, index_of_chunks, supports
from pipelines.text import sentences as split_sentences

# A merge sentence often fuses several child sentences: it inherits from the best few that support it,
# as long as they match it nearly as well as the best one does (a copy's best match is the copied sentence,
# and a sentence of the same kind is no source of it).
TRACED_CHILDREN = 3
TRACE_MARGIN = 0.1
METHODS = ("model", "aligned", "traced", "unsupported")


@dataclass(frozen=True)
class Source:
    chunk_idx: int
    start_char: int
    end_char: int
    section: str | None = None
    first_line: int | None = None
    last_line: int | None = None
    page: int | None = None  # a PDF's pages, from 1: where the passage starts and ends
    last_page: int | None = None


@dataclass(frozen=True)
class Citation:
    sentence_idx: int
    sentence: str
    method: str
    score: float | None = None
    source: Source | None = None  # None: unsupported
    dropped: int = 0  # ids the model named for this sentence that its prompt did not give (or past the cap)


@dataclass(frozen=True)
class SummaryNode:
    summary_id: str
    level: int
    idx: int
    kind: str
    text: str
    first_chunk: int
    last_chunk: int
    is_final: bool = False
    answer: str | None = None  # a grounded merge: the model's answer with its passage ids
    passages: dict[int, str] | None = None  # and the passages its prompt gave, by id


class Locator:
    """A passage's section, page and line numbers in its document."""

    def __init__(self, text: str, sections: Sequence[dict] = (), code: bool = False,
                 page_starts: Sequence[int] = ()):
        # One section is the whole document: no locator.
        sections = sorted(sections, key=lambda s: int(s["start"])) if len(sections) > 1 else []
        self.section_starts = [int(s["start"]) for s in sections]
        self.section_titles = [str(s["title"]) for s in sections]
        self.newlines = [m.start() for m in re.finditer("\n", text)] if code else None
        self.page_starts = list(page_starts)

    def source(self, chunk_idx: int, start: int, end: int) -> Source:
        last = max(start, end - 1)
        return Source(chunk_idx, start, end, section=self._section(start), page=self._page(start),
                      last_page=self._page(last), first_line=self._line(start), last_line=self._line(last))

    def _section(self, offset: int) -> str | None:
        at = bisect.bisect_right(self.section_starts, offset) - 1
        return self.section_titles[at] if at >= 0 else None

    def _line(self, offset: int) -> int | None:
        return None if self.newlines is None else bisect.bisect_left(self.newlines, offset) + 1

    def _page(self, offset: int) -> int | None:
        return bisect.bisect_right(self.page_starts, offset) if self.page_starts else None


def children_of(node: SummaryNode, nodes: Sequence[SummaryNode]) -> list[SummaryNode]:
    """The summaries `node` was written from: a merge's summaries of the level below within its
    chunks; an update's running summary before it (its compression, when one was kept); a
    compression's update."""
    if node.kind == "merge":
        return [n for n in nodes if n.level == node.level - 1 and node.first_chunk <= n.first_chunk
                and n.last_chunk <= node.last_chunk]
    if node.kind == "update":
        before = [n for n in nodes if n.idx == node.idx - 1 and n.kind in ("update", "compress")]
        return sorted(before, key=lambda n: n.kind == "compress")[-1:]  # the compression replaced its update
    if node.kind == "compress":
        return [n for n in nodes if n.idx == node.idx and n.kind == "update"]
    return []


def _written_order(node: SummaryNode) -> tuple:
    return node.level, node.idx, node.kind == "compress"


def cite_summaries(nodes: Sequence[SummaryNode], index: SourceIndex, locator: Locator,
                   threshold: float = SUPPORT_THRESHOLD) -> dict[str, list[Citation]]:
    """summary_id -> its citations, children before the summaries written from them."""
    cited: dict[str, list[Citation]] = {}
    for node in sorted(nodes, key=_written_order):
        sentences = split_sentences(node.text)
        by_model = _by_model(sentences, node, index, locator)
        traced = _traced(sentences, children_of(node, nodes), cited, index.embed, threshold)
        rest = [n for n in range(len(sentences)) if not by_model.get(n, ([], 0))[0] and n not in traced]
        aligned = _aligned([sentences[n] for n in rest], rest, node, index, locator, threshold)
        cited[node.summary_id] = []
        for n in range(len(sentences)):
            named, dropped = by_model.get(n, ([], 0))
            cited[node.summary_id] += _with_dropped(named or traced.get(n) or aligned[n], dropped)
    return cited


def _with_dropped(citations: list[Citation], dropped: int) -> list[Citation]:
    if not dropped:
        return citations
    first = citations[0]
    return [Citation(first.sentence_idx, first.sentence, first.method, first.score, first.source, dropped),
            *citations[1:]]


def _by_model(sentences: list[str], node: SummaryNode, index: SourceIndex,
              locator: Locator) -> dict[int, tuple[list[Citation], int]]:
    """Sentence number -> (its citations by the passage ids the model gave, ids dropped)."""
    if not node.answer or not node.passages:
        return {}
    from pipelines.summarize.passage_ids import cited_ids

    at = {}  # passage text -> its passage in the index (the prompt's passages are the index's)
    for i in index.in_chunks(node.first_chunk, node.last_chunk):
        at.setdefault(index.passages[i].text, index.passages[i])
    out = {}
    for n, (ids, dropped) in cited_ids(node.answer, set(node.passages)).items():
        if n >= len(sentences):  # a sentence the summary did not keep (an answer cut to its last full stop)
            continue
        found = [at[node.passages[k]] for k in ids if node.passages[k] in at]
        dropped += len(ids) - len(found)
        out[n] = ([Citation(n, sentences[n], "model", None, locator.source(p.chunk_idx, p.start, p.end))
                   for p in found], dropped)
    return out


def _aligned(sentences: list[str], numbers: list[int], node: SummaryNode, index: SourceIndex, locator: Locator,
             threshold: float) -> dict[int, list[Citation]]:
    """Sentence number -> its citation among the passages the summary was given (or unsupported)."""
    given = index.in_chunks(node.first_chunk, node.last_chunk)
    if not given:
        return {n: [Citation(n, s, "unsupported")] for n, s in zip(numbers, sentences)}
    out = {}
    for n, sentence, (hit, backed) in zip(numbers, sentences, index.pin(sentences, among=given, threshold=threshold)):
        if backed:
            p = index.passages[hit.passage]
            out[n] = [Citation(n, sentence, "aligned", hit.dense, locator.source(p.chunk_idx, p.start, p.end))]
        else:
            out[n] = [Citation(n, sentence, "unsupported")]
    return out


def _traced(sentences: list[str], children: list[SummaryNode], cited: dict[str, list[Citation]],
            embed: Callable, threshold: float) -> dict[int, list[Citation]]:
    """Sentence number -> citations inherited from the child sentences that support it."""
    by_sentence = [(child.summary_id, k, text) for child in children
                   for k, text in enumerate(split_sentences(child.text))]
    if not sentences or not by_sentence:
        return {}
    index = TextIndex([text for _, _, text in by_sentence], embed)
    out: dict[int, list[Citation]] = {}
    for n, (sentence, hits) in enumerate(zip(sentences, index.search(sentences, k=TRACED_CHILDREN))):
        sources: dict[Source, float] = {}
        best = max(hit.dense for hit in hits)
        for hit in hits:
            if not supports(hit, threshold) or hit.dense < best - TRACE_MARGIN:
                continue
            child_id, k, _ = by_sentence[hit.passage]
            for inherited in cited.get(child_id, []):
                if inherited.sentence_idx == k and inherited.source is not None:
                    sources.setdefault(inherited.source, hit.dense)
        if sources:
            out[n] = [Citation(n, sentence, "traced", score, source) for source, score in sources.items()]
    return out


# -- the store ------------------------------------------------------------------


def cite_run(store, run_id: str, threshold: float = SUPPORT_THRESHOLD) -> dict[str, list[Citation]]:
    """Cite every summary of the run and replace its rows in `citations`."""
    from pipelines.retrieval import load_chunks
    from pipelines.store import insert_op, sql_op, utc

    chunks = load_chunks(store, run_id)
    index = index_of_chunks(chunks)
    nodes = [_node(*row) for row in store.execute(
        "SELECT s.summary_id, s.level, s.idx, s.kind, s.text, s.first_chunk, s.last_chunk, s.is_final, "
        "any_value(c.request), any_value(c.response) FROM summaries s LEFT JOIN llm_calls c "
        "ON c.request_hash = s.request_hash AND c.status = 'ok' AND s.kind = 'merge' AND NOT s.degraded "
        "WHERE s.run_id = ? AND s.text IS NOT NULL GROUP BY ALL", [run_id])]
    cited = cite_summaries(nodes, index, locator_for_run(store, run_id, chunks), threshold)
    created = utc()
    rows = [citation_row(run_id, summary_id, c, created) for summary_id, cs in cited.items() for c in cs]
    store.write([sql_op("DELETE FROM citations WHERE run_id = ?", [run_id]), insert_op("citations", rows)])
    return cited


def _node(summary_id, level, idx, kind, text, first_chunk, last_chunk, is_final, request, response) -> SummaryNode:
    """A summary, with a grounded merge's answer and the passages its prompt gave."""
    from pipelines.summarize.passage_ids import given, passages_block

    passages = None
    if request and response:
        block = passages_block(json.loads(request)["messages"][-1]["content"])
        passages = given(block) if block is not None else None
    return SummaryNode(summary_id, level, idx, kind, text, first_chunk, last_chunk, is_final,
                       response if passages else None, passages)


def locator_for_run(store, run_id: str, chunks: Sequence[tuple[int, int, str]]) -> Locator:
    ((kind, sections, metadata),) = store.execute(
        "SELECT d.kind, d.sections, d.metadata FROM runs r JOIN documents d USING (doc_id) WHERE r.run_id = ? "
        "LIMIT 1", [run_id]) or [(None, None, None)]
    metadata = json.loads(metadata) if metadata else {}
    return Locator(document_text(chunks), json.loads(sections) if sections else (), code=kind == "code",
                   page_starts=metadata.get("page_starts") or ())


def document_text(chunks: Sequence[tuple[int, int, str]]) -> str:
    """The document as its chunks hold it (overlapping windows counted once), for line numbers."""
    text, end = [], 0
    for _, start, chunk in sorted(chunks, key=lambda c: c[1]):
        if start > end:  # a gap (none in longsum's chunkers): keep the offsets true
            text.append(" " * (start - end))
            end = start
        text.append(chunk[end - start:])
        end = max(end, start + len(chunk))
    return "".join(text)


def citation_row(run_id: str, summary_id: str, c: Citation, created) -> dict:
    s = c.source or Source(None, None, None)
    return {"run_id": run_id, "summary_id": summary_id, "sentence_idx": c.sentence_idx, "sentence": c.sentence,
            "chunk_idx": s.chunk_idx, "start_char": s.start_char, "end_char": s.end_char, "page": s.page,
            "last_page": s.last_page, "section": s.section, "first_line": s.first_line, "last_line": s.last_line,
            "method": c.method, "score": c.score, "dropped": c.dropped, "created_at": created}


def stored_citations(store, run_id: str, summary_id: str) -> list[tuple[Citation, str | None]]:
    """A summary's citations as the table holds them, each with the text of its passage."""
    rows = store.execute(
        "SELECT c.sentence_idx, c.sentence, c.method, c.score, c.chunk_idx, c.start_char, c.end_char, c.section, "
        "c.first_line, c.last_line, c.page, c.last_page, c.dropped, "
        "substr(k.text, c.start_char - k.start_char + 1, c.end_char - c.start_char) FROM citations c "
        "LEFT JOIN chunks k ON k.run_id = c.run_id AND k.idx = c.chunk_idx "
        "WHERE c.run_id = ? AND c.summary_id = ? ORDER BY c.sentence_idx, c.start_char", [run_id, summary_id])
    out = []
    for idx, sentence, method, score, chunk, start, end, section, first_line, last_line, page, last_page, dropped, \
            passage in rows:
        source = None if chunk is None else Source(chunk, start, end, section, first_line, last_line, page, last_page)
        out.append((Citation(idx, sentence, method, score, source, dropped or 0), passage))
    return out


def final_citations(store, run_id: str) -> list[Citation]:
    """The citations of the run's final summary, as stored."""
    final = store.execute("SELECT summary_id FROM summaries WHERE run_id = ? AND is_final", [run_id])
    return [c for c, _ in stored_citations(store, run_id, final[0][0])] if final else []


# -- what a reader sees -----------------------------------------------------------


def marker(citations: Sequence[Citation]) -> str:
    """`[p. 4–5]`, `[ch. III]`, `[ll. 12–40]` or `[chars 1200–1850]` for a sentence's citations;
    `[unsupported]` when nothing supports it."""
    sources = [c.source for c in citations if c.source is not None]
    if not sources:
        return "[unsupported]"
    if all(s.page for s in sources):
        return "[" + _span("p.", min(s.page for s in sources), max(s.last_page or s.page for s in sources)) + "]"
    if all(s.first_line for s in sources):
        return "[" + _span("ll.", min(s.first_line for s in sources), max(s.last_line for s in sources)) + "]"
    sections = list(dict.fromkeys(s.section for s in sources if s.section))
    if sections and len(sections) == len({s.section for s in sources}):
        return "[" + "; ".join(_section_label(t) for t in sections[:3]) + "]"
    return "[" + _span("chars", min(s.start_char for s in sources), max(s.end_char for s in sources)) + "]"


def _span(label: str, a: int, b: int) -> str:
    return f"{label} {a}" if a == b else f"{label} {a}\u2013{b}"


def _section_label(title: str) -> str:
    chapter = re.match(r"(?i)^\s*(chapter|book|part|act|letter)\s+([\w.]+)", title)
    if chapter:
        short = {"chapter": "ch.", "book": "bk.", "part": "pt.", "act": "act", "letter": "letter"}
        return f"{short[chapter.group(1).lower()]} {chapter.group(2).rstrip('.')}"
    title = " ".join(title.split())
    return f"\u00a7 {title[:40]}" + ("\u2026" if len(title) > 40 else "")


def with_markers(summary: str, citations: Sequence[Citation]) -> str:
    """The summary with each sentence's marker after it (its paragraphs kept)."""
    from pipelines.text import split_sentences as pieces

    by_sentence: dict[int, list[Citation]] = {}
    for c in citations:
        by_sentence.setdefault(c.sentence_idx, []).append(c)
    out, n = [], 0
    for piece in pieces(summary):
        body = piece.rstrip()
        if not body.strip():
            out.append(piece)
            continue
        out.append(f"{body} {marker(by_sentence.get(n, []))}{piece[len(body):]}")
        n += 1
    return "".join(out)


def as_json(citations: Sequence[Citation]) -> list[dict]:
    """Per sentence: its text and its sources, in order."""
    out: dict[int, dict] = {}
    for c in citations:
        entry = out.setdefault(c.sentence_idx, {"sentence_idx": c.sentence_idx, "sentence": c.sentence,
                                                "marker": "", "sources": []})
        if c.source is not None:
            entry["sources"].append({**{k: v for k, v in vars(c.source).items() if v is not None},
                                     "method": c.method, **({"score": round(c.score, 4)} if c.score else {})})
    for n, entry in out.items():
        entry["marker"] = marker([c for c in citations if c.sentence_idx == n])
    return [out[n] for n in sorted(out)]
