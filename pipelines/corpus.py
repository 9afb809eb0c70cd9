"""Corpora to evaluate on: a folder of documents with their reference
summaries, or a SQuALITY `.jsonl` file.

A folder holds documents of any format longsum reads (text, Markdown,
LaTeX, code, PDF, EPUB, HTML; recognised by extension or content), and
`NAME.ref*.txt` beside `NAME.pdf` (or `NAME.txt`, ...) are that document's
reference summaries. SQuALITY (Wang et al., 2022) pairs
~5,000-word Gutenberg stories with five questions, each answered by four
people; the answers to "What is the plot of the story?" are a story's
references. A SQuALITY story travels as its text (`CorpusItem.document`),
so no file is written for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.documents import Document, find_sections, is_document, normalise_newlines

PLOT_QUESTION = "what is the plot of the story?"


class CorpusError(ValueError):
    """A corpus that cannot be read; one line for the user."""


@dataclass(frozen=True)
class CorpusItem:
    name: str
    path: str | None = None  # read when the item is evaluated
    document: Document | None = None  # or the text itself
    references: tuple[str, ...] = ()
    reference_ids: tuple[str, ...] = ()


def load_corpus(source: str | Path, limit: int | None = None) -> list[CorpusItem]:
    source = Path(source).expanduser()
    if source.is_dir():
        items = folder_items(source)
    elif source.suffix == ".jsonl":
        items = squality_items(source, limit)
    else:
        raise CorpusError(f"{source}: expected a folder of documents or a SQuALITY .jsonl file")
    if not items:
        raise CorpusError(f"{source}: no documents found")
    return items[:limit] if limit else items


def folder_items(folder: Path) -> list[CorpusItem]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_document(p))
    items = []
    for doc in (p for p in files if ".ref" not in p.stem):
        refs = sorted(p for p in files if p.stem.startswith(f"{doc.stem}.ref"))
        items.append(CorpusItem(
            name=doc.name, path=str(doc.resolve()),
            references=tuple(p.read_text(encoding="utf-8") for p in refs),
            reference_ids=tuple(f"{doc.stem}:{p.name}" for p in refs),
        ))
    return items


def squality_items(path: str | Path, limit: int | None = None) -> list[CorpusItem]:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    items = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                passage_id = str(row["metadata"]["passage_id"])
                question = next(q for q in row["questions"] if q["question_text"].strip().lower() == PLOT_QUESTION)
                responses = [r for r in question["responses"] if r.get("response_text", "").strip()]
                text = normalise_newlines(row["document"])
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError, StopIteration):
                raise CorpusError(f"{path}:{number}: not a SQuALITY row with a plot question") from None
            if not responses:
                raise CorpusError(f"{path}:{number}: the plot question has no answers")
            name = f"squality-{passage_id}.txt"
            items.append(CorpusItem(
                name=name,
                document=Document(path=name, text=text, kind="book", encoding="utf-8",
                                  sections=tuple(find_sections(text, "book"))),
                references=tuple(r["response_text"].strip() for r in responses),
                reference_ids=tuple(f"squality:{passage_id}:{r.get('worker_id') or i}" for i, r in enumerate(responses)),
            ))
            if limit is not None and len(items) >= limit:
                break
    return items
