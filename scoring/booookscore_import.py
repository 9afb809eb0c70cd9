"""The BooookScore paper's released annotation files, imported as runs of
the store (`import:LABEL`) with their corpus-level BooookScore."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scoring.options import ScoringError
from scoring.records import annotation_rows, booookscore_score_rows, write


@dataclass
class ImportSummary:
    label: str
    run_id: str
    n_books: int
    n_sentences: int
    n_flagged: int
    score: float  # mean over books of 1 - flagged/sentences

    @property
    def percent(self) -> float:
        return round(100 * self.score, 2)


def import_booookscore(store, path: str | Path, label: str | None = None) -> ImportSummary:
    """Import a released BooookScore annotation file as run `import:LABEL`
    (re-importing a label replaces it) and return its BooookScore."""
    from pipelines.store import utc
    from scoring.booookscore import file_sha256, load_released

    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: no such file")
    label = label or path.stem
    run_id = f"import:{label}"
    books = load_released(path)
    config = {"source": "booookscore-released-annotations", "file": path.name, "sha256": file_sha256(path)}
    created = utc()
    rows, annotations, scores = [], [], []
    for book in books:
        result = book.result
        if not result.n_sentences:
            continue
        rows += booookscore_score_rows(run_id, book.name, result, config, created, label)
        annotations += annotation_rows(run_id, book.name, result, config, created, label, "import")
        scores.append(result.score)
    if not scores:
        raise ScoringError(f"{path}: no annotated sentences")
    write(store, rows, annotations, replace_run=run_id)
    return ImportSummary(
        label=label, run_id=run_id, n_books=len(scores),
        n_sentences=sum(b.result.n_sentences for b in books), n_flagged=sum(b.result.n_flagged for b in books),
        score=sum(scores) / len(scores),
    )
