"""Evaluate summarization methods on SQuALITY.

SQuALITY (Wang et al., 2022) pairs ~5,000-word Gutenberg stories with five
questions, each answered by four people. Question 1 of every story is "What is
the plot of the story?": its four answers are reference summaries. For each
story and method this runs the whole pipeline (`pipelines.runner`), then
scores every run's final summary against the four references in one batch
(BERTScore loads its model once) and reports the mean per method. The
extractive baseline (no LLM) always runs beside the LLM methods, so every
table has a floor to compare with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from scoring import ScoreJob, ScoringError, ScoringOptions, score_runs

PLOT_QUESTION = "what is the plot of the story?"
BASELINE = "extractive"
TABLE_COLUMNS = (
    ("rouge1_f", "rouge1"), ("rouge2_f", "rouge2"), ("rougeL_f", "rougeL"), ("rougeLsum_f", "rougeLsum"),
    ("bertscore_f1", "bertscore_f1"), ("booookscore", "booookscore"),
)


@dataclass(frozen=True)
class Story:
    passage_id: str
    text: str
    references: tuple[str, ...]
    reference_ids: tuple[str, ...]


def load_stories(path: str | Path, limit: int | None = None) -> list[Story]:
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: no such file")
    stories = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                passage_id = str(row["metadata"]["passage_id"])
                question = next(q for q in row["questions"] if q["question_text"].strip().lower() == PLOT_QUESTION)
                responses = [r for r in question["responses"] if r.get("response_text", "").strip()]
                text = row["document"]
            except (json.JSONDecodeError, KeyError, TypeError, StopIteration):
                raise ScoringError(f"{path}:{number}: not a SQuALITY row with a plot question") from None
            if not responses:
                raise ScoringError(f"{path}:{number}: the plot question has no answers")
            stories.append(Story(
                passage_id=passage_id, text=text,
                references=tuple(r["response_text"].strip() for r in responses),
                reference_ids=tuple(f"squality:{passage_id}:{r.get('worker_id') or i}" for i, r in enumerate(responses)),
            ))
            if limit is not None and len(stories) >= limit:
                break
    if not stories:
        raise ScoringError(f"{path}: no stories")
    return stories


def story_document(story: Story):
    from pipelines.documents import Document, find_sections, normalise_newlines

    text = normalise_newlines(story.text)
    return Document(path=f"squality-{story.passage_id}.txt", text=text, kind="book", encoding="utf-8",
                    sections=tuple(find_sections(text, "book")))


@dataclass
class EvalResult:
    columns: list[str]
    rows: list[tuple]
    run_ids: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def evaluate(
    path: str | Path,
    store,
    *,
    methods: Sequence[str] = ("hierarchical",),
    model: str = "llamacpp",
    base_url: str | None = None,
    limit: int | None = None,
    metrics: Sequence[str] = ("rouge", "bertscore"),
    summary_words: int | None = None,
    chunk_size: int | None = None,
    backend=None,
    options: ScoringOptions | None = None,
    on_event: Callable[[str], None] | None = None,
) -> EvalResult:
    """Run every method over the stories, score the runs, tabulate the means.

    `backend` overrides the LLM backend for the LLM methods (tests pass a
    scripted one); the extractive baseline is always added."""
    from pipelines.runner import RunConfig, check_budgets, make_backend, summarize_document

    stories = load_stories(path, limit)
    methods = list(dict.fromkeys([*methods, BASELINE]))
    label = f"squality:{Path(path).name}"
    options = options or ScoringOptions(label=label)
    say = on_event or (lambda message: None)
    jobs: list[ScoreJob] = []
    by_method: dict[str, list[str]] = {m: [] for m in methods}
    failures = []
    for method in methods:
        config = RunConfig(method=method, model=model, base_url=base_url,
                           **({"summary_words": summary_words} if summary_words else {}),
                           **({"chunk_size": chunk_size} if chunk_size else {}))
        config.validate()
        method_backend = None
        if method != BASELINE:
            method_backend = backend or make_backend(config)
            check_budgets(config, method_backend)
        for story in stories:
            try:
                result = summarize_document(story_document(story), config, store, backend=method_backend)
            except Exception as exc:  # noqa: BLE001 - one failed story must not sink the evaluation
                failures.append(f"{method} {story.passage_id}: {type(exc).__name__}: {exc}")
                say(f"{method} {story.passage_id}: failed ({type(exc).__name__})")
                continue
            by_method[method].append(result.run_id)
            jobs.append(ScoreJob(result.run_id, list(story.references), list(story.reference_ids)))
            say(f"{method} {story.passage_id}: {result.status}, {result.seconds:.1f} s")
    if jobs:
        score_runs(store, jobs, list(metrics), options=options, on_progress=lambda m: say(f"scored {m}"))
    columns, rows = method_table(store, by_method)
    return EvalResult(columns, rows, by_method, failures)


def method_table(store, by_method: dict[str, list[str]]) -> tuple[list[str], list[tuple]]:
    """Mean scores per method over the given runs (from `scores_wide`)."""
    selects = ", ".join(f"round(avg(w.{column}), 4) AS {name}" for column, name in TABLE_COLUMNS)
    rows = []
    with store.connect() as con:
        for method, run_ids in by_method.items():
            if not run_ids:
                rows.append((method, 0, *[None] * len(TABLE_COLUMNS), None, None))
                continue
            marks = ", ".join("?" for _ in run_ids)
            found = con.execute(
                f"SELECT count(*), {selects}, round(avg(s.n_words), 1), round(avg(r.seconds), 1) "
                f"FROM runs r LEFT JOIN scores_wide w USING (run_id) "
                f"LEFT JOIN summaries s ON s.run_id = r.run_id AND s.is_final "
                f"WHERE r.run_id IN ({marks})",
                run_ids,
            ).fetchone()
            rows.append((method, *found))
    columns = ["method", "runs", *[name for _, name in TABLE_COLUMNS], "words", "seconds"]
    keep = [i for i, c in enumerate(columns) if i < 2 or c in ("words", "seconds") or any(r[i] is not None for r in rows)]
    return [columns[i] for i in keep], [tuple(r[i] for i in keep) for r in rows]
