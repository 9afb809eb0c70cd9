"""Scoring: ROUGE, BERTScore, BooookScore, faithfulness and coverage, written to the store.

    from scoring import score_run
    rows = score_run(store, run_id, ["rouge", "bertscore", "booookscore"], references=[ref_text])

Every number lands in the long-format `scores` table, one row per (run,
summary, metric, variant, aggregate, reference), with the scorer's settings
as JSON in `config` (model, layer, hash, tokenizer, prompt version ...), and
the `scores_wide` view shows one row per run with a column per metric:

    metric       variants                          aggregate           reference_id
    rouge1/2/L/Lsum  p, r, f                       NULL (per ref), max, mean   set on per-ref rows
    bertscore    p, r, f1                          NULL (per ref), max, mean   set on per-ref rows
    booookscore  score, lower, sentences, flagged, unparseable   NULL           NULL
    faithfulness yes, supported, claims, judged, unparseable,    NULL           NULL
                 unparseable_sentences, n_yes, n_partial, n_no, n_inapplicable
    coverage     deciles, end_share, grounded, mean_position, sentences  NULL   NULL

Faithfulness also writes one row per claim to `claims` (claim, label,
evidence, chunk ids, judge model, request hashes) and coverage one row per
summary sentence to `coverage` (aligned chunk, span, position, decile);
the wide view pools faithfulness over a run's summaries (Yes / judged
claims, as FABLES reports per model).

`max` over references is what the reference implementation reports for
several references (rouge-score's score_multi: the best reference by F;
bert-score: the element-wise maximum); `mean` is the element-wise mean.
BooookScore rows belong to one summary; the wide view averages a run's
summaries (one for a longsum run, one per book for an imported file), which
is the paper's corpus-level BooookScore.

Heavy libraries (torch, bert_score, rouge_score, llama_cpp) are imported only
when a metric that needs them runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from pipelines.defaults import DEFAULT_MODEL

METRICS = ("rouge", "bertscore", "booookscore", "faithfulness", "coverage")
NEEDS_REFERENCES = ("rouge", "bertscore")


class ScoringError(ValueError):
    """A scoring request that cannot be carried out; one line for the user."""


@dataclass(frozen=True)
class ScoringOptions:
    label: str | None = None
    rouge_tokenizer: str = "rouge-score"
    bertscore_model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    bertscore_layer: int | None = None
    bertscore_idf: bool = False
    bertscore_rescale: bool = False
    booookscore_version: str = "v1"
    booookscore_max_attempts: int = 3
    booookscore_batch_size: int = 6
    booookscore_max_tokens: int | None = None  # None: the checker's default per call
    booookscore_concurrency: int = 1  # checker calls in flight at once (API judges)
    judge_model: str = DEFAULT_MODEL
    judge_base_url: str | None = None
    faithfulness_max_attempts: int = 3
    faithfulness_concurrency: int = 1  # judge calls in flight at once (API judges)
    faithfulness_evidence_k: int = 3  # passages of the source shown to the judge per claim
    faithfulness_max_claims: int | None = None  # judge only the first N claims (a cheap sample)
    coverage_threshold: float = 0.25  # cosine at which a summary sentence counts as grounded


@dataclass
class ScoreJob:
    """One run to score, with its references (texts) and their ids."""

    run_id: str
    references: list[str] | None = None
    reference_ids: list[str] | None = None
    summary_id: str | None = None
    summary: str | None = None


def parse_metrics(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in METRICS:
            raise ScoringError(f"unknown metric {item!r}; choose from {', '.join(METRICS)}")
        if item not in out:
            out.append(item)
    return out


def reference_id(text: str, name: str | None = None) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{name}:{digest}" if name else digest


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- reading the store ---------------------------------------------------------


def final_summary(store, run_id: str) -> tuple[str, str, str]:
    """(full run id, summary_id, text) of a run's final summary; run ids may be prefixes."""
    with store.connect() as con:
        rows = con.execute(
            "SELECT run_id, summary_id, text FROM summaries WHERE run_id LIKE ? || '%' AND is_final "
            "ORDER BY created_at DESC", [run_id],
        ).fetchall()
    runs = {r[0] for r in rows}
    if not rows:
        raise ScoringError(f"no final summary for run {run_id!r} in {store.path}")
    if len(runs) > 1:
        raise ScoringError(f"run id prefix {run_id!r} matches {len(runs)} runs; give more of it")
    return rows[0]


# -- scoring -------------------------------------------------------------------


def score_run(
    store,
    run_id: str,
    metrics: Sequence[str] | str,
    references: Sequence[str] | None = None,
    llm=None,
    *,
    reference_ids: Sequence[str] | None = None,
    **options,
) -> list[dict]:
    """Score a run's final summary and write the rows; returns the rows.

    `llm` (a RecordingLLM) judges BooookScore; by default the `judge_model`
    option's backend is resolved and journaled to this store under the run.
    Keyword options are `ScoringOptions` fields."""
    job = ScoreJob(run_id, list(references) if references else None, list(reference_ids) if reference_ids else None)
    return score_runs(store, [job], metrics, llm=llm, options=ScoringOptions(**options))


def score_runs(store, jobs: Sequence[ScoreJob], metrics: Sequence[str] | str, *, llm=None,
               options: ScoringOptions | None = None, on_progress=None) -> list[dict]:
    """Score several runs at once (BERTScore batches every pair through one model)."""
    from pipelines.store import utc

    options = options or ScoringOptions()
    metrics = parse_metrics(metrics)
    if not metrics:
        raise ScoringError(f"no metric to score (choose from {', '.join(METRICS)})")
    for job in jobs:
        if job.summary is None:
            job.run_id, job.summary_id, job.summary = final_summary(store, job.run_id)
        if job.references is not None:
            job.references = list(job.references)
            if job.reference_ids is None:
                job.reference_ids = [reference_id(r) for r in job.references]
            if len(job.reference_ids) != len(job.references):
                raise ScoringError("one reference id per reference")
    needing = [m for m in metrics if m in NEEDS_REFERENCES]
    if needing and any(not job.references for job in jobs):
        raise ScoringError(f"{' and '.join(needing)} need at least one reference (--reference FILE)")

    created = utc()
    rows: list[dict] = []
    annotations: list[dict] = []
    if "rouge" in metrics:
        rows += _rouge_rows(jobs, options, created)
        _progress(on_progress, "rouge")
    if "bertscore" in metrics:
        rows += _bertscore_rows(jobs, options, created)
        _progress(on_progress, "bertscore")
    if "booookscore" in metrics:
        backend = None if llm is not None else judge_backend(options)
        for job in jobs:
            judge = llm if llm is not None else recording_judge(store, backend, job.run_id)
            score_rows, annotation_rows = _booookscore_rows(job, options, created, judge)
            rows += score_rows
            annotations += annotation_rows
            _progress(on_progress, "booookscore")
    claims: list[dict] = []
    coverage: list[dict] = []
    if "faithfulness" in metrics or "coverage" in metrics:
        grounded, claims, coverage = _grounded_rows(store, jobs, metrics, options, created, llm, on_progress)
        rows += grounded
    write(store, rows, annotations, claims=claims, coverage=coverage)
    return rows


def _grounded_rows(store, jobs, metrics, options: ScoringOptions, created, llm, on_progress):
    """Faithfulness and coverage: both read the run's source chunks through one index per run."""
    from scoring.coverage import coverage_rows, profile
    from scoring.evidence import EvidenceError, index_for_run
    from scoring.faithfulness import FaithfulnessChecker, claim_rows

    rows, claims, coverage = [], [], []
    backend = None
    if "faithfulness" in metrics and llm is None:
        backend = judge_backend(options)
    for job in jobs:
        try:
            index = index_for_run(store, job.run_id)
        except EvidenceError as exc:
            raise ScoringError(str(exc)) from None
        if "faithfulness" in metrics:
            judge = llm if llm is not None else recording_judge(store, backend, job.run_id)
            checker = FaithfulnessChecker(judge, max_attempts=options.faithfulness_max_attempts,
                                          evidence_k=options.faithfulness_evidence_k,
                                          concurrency=options.faithfulness_concurrency)
            result = checker.check(job.summary, index, max_claims=options.faithfulness_max_claims)
            config = {**result.config, "passages": len(index.passages),
                      **({"max_claims": options.faithfulness_max_claims} if options.faithfulness_max_claims else {})}
            rows += [score_row(job.run_id, job.summary_id, "faithfulness", variant, value, config, created,
                               label=options.label) for variant, value in result.values()]
            claims += claim_rows(job.run_id, job.summary_id, result.claims, source="llm", judge_model=checker.judge_model,
                                 config_hash=config_hash(config), created=created, set_label=options.label)
            _progress(on_progress, "faithfulness")
        if "coverage" in metrics:
            result = profile(job.summary, index, options.coverage_threshold)
            rows += [score_row(job.run_id, job.summary_id, "coverage", variant, value, result.config, created,
                               label=options.label) for variant, value in result.values()]
            coverage += coverage_rows(job.run_id, job.summary_id, result, config_hash(result.config), created,
                                      options.label)
            _progress(on_progress, "coverage")
    return rows, claims, coverage


def _progress(callback, what: str) -> None:
    if callback is not None:
        callback(what)


def write(store, rows: list[dict], annotations: list[dict] = (), replace_run: str | None = None, *,
          claims: list[dict] = (), coverage: list[dict] = ()) -> None:
    """Bulk-write score, annotation, claim and coverage rows in one transaction
    (spooled by the store when another process holds the file)."""
    from pipelines.store import insert_op, sql_op

    ops = []
    if replace_run is not None:
        ops += [sql_op("DELETE FROM scores WHERE run_id = ?", [replace_run]),
                sql_op("DELETE FROM booookscore_annotations WHERE run_id = ?", [replace_run])]
    ops += [insert_op("scores", rows), insert_op("booookscore_annotations", list(annotations)),
            insert_op("claims", list(claims)), insert_op("coverage", list(coverage))]
    store.write(ops)


def score_row(job_run_id, summary_id, metric, variant, value, config, created, *, aggregate=None,
              reference=None, label=None) -> dict:
    from pipelines.llm.recording import new_id

    return {
        "score_id": new_id(), "run_id": job_run_id, "summary_id": summary_id, "label": label, "metric": metric,
        "variant": variant, "aggregate": aggregate, "reference_id": reference,
        "value": None if value is None else float(value), "config": config, "config_hash": config_hash(config),
        "created_at": created,
    }


def _rouge_rows(jobs, options: ScoringOptions, created) -> list[dict]:
    from scoring.rouge import RougeScorer

    scorer = RougeScorer(tokenizer=options.rouge_tokenizer)
    base = scorer.config()
    rows = []
    for job in jobs:
        result = scorer.score_one(job.summary, job.references)
        config = {**base, "non_ascii_share": round(result.non_ascii_share, 4)}
        common = dict(label=options.label)
        for ref_id, per_ref in zip(job.reference_ids, result.per_reference):
            for rouge_type, s in per_ref.items():
                for variant, value in (("p", s.precision), ("r", s.recall), ("f", s.fmeasure)):
                    rows.append(score_row(job.run_id, job.summary_id, rouge_type, variant, value, config, created,
                                          reference=ref_id, **common))
        for aggregate, scores in (("max", result.max), ("mean", result.mean)):
            for rouge_type, s in scores.items():
                for variant, value in (("p", s.precision), ("r", s.recall), ("f", s.fmeasure)):
                    rows.append(score_row(job.run_id, job.summary_id, rouge_type, variant, value, config, created,
                                          aggregate=aggregate, **common))
    return rows


def _bertscore_rows(jobs, options: ScoringOptions, created) -> list[dict]:
    from scoring.bertscore import get_scorer, score_against_references

    scorer = get_scorer(options.bertscore_model, options.bertscore_layer, idf=options.bertscore_idf,
                        rescale_with_baseline=options.bertscore_rescale)
    results = score_against_references(scorer, [j.summary for j in jobs], [j.references for j in jobs])
    rows = []
    for job, result in zip(jobs, results):
        config = {**scorer.config(), "windows": scorer.windows_used(job.summary)}
        for ref_id, s in zip(job.reference_ids, result.per_reference):
            for variant, value in (("p", s.precision), ("r", s.recall), ("f1", s.f1)):
                rows.append(score_row(job.run_id, job.summary_id, "bertscore", variant, value, config, created,
                                      reference=ref_id, label=options.label))
        for aggregate, s in (("max", result.max), ("mean", result.mean)):
            for variant, value in (("p", s.precision), ("r", s.recall), ("f1", s.f1)):
                rows.append(score_row(job.run_id, job.summary_id, "bertscore", variant, value, config, created,
                                      aggregate=aggregate, label=options.label))
    return rows


def judge_backend(options: ScoringOptions):
    """The LLM backend that annotates sentences for BooookScore."""
    from pipelines.llm import resolve

    return resolve(options.judge_model, base_url=options.judge_base_url)


def recording_judge(store, backend, run_id: str | None):
    """The judge wrapped so that its calls are journaled to the store under the run (and replayed)."""
    from pipelines.llm.recording import RecordingLLM
    from pipelines.store import DuckDBJournal

    return RecordingLLM(backend, DuckDBJournal(store), run_id=run_id)


def _booookscore_rows(job: ScoreJob, options: ScoringOptions, created, judge) -> tuple[list[dict], list[dict]]:
    from scoring.booookscore import BooookScoreChecker

    checker = BooookScoreChecker(judge, options.booookscore_version, max_attempts=options.booookscore_max_attempts,
                                 batch_size=options.booookscore_batch_size, max_tokens=options.booookscore_max_tokens,
                                 concurrency=options.booookscore_concurrency)
    result = checker.check(job.summary)
    return (booookscore_score_rows(job.run_id, job.summary_id, result, checker.config(), created, options.label),
            annotation_rows(job.run_id, job.summary_id, result, checker.config(), created, options.label, "llm"))


def booookscore_score_rows(run_id, summary_id, result, config: dict, created, label=None) -> list[dict]:
    values = (
        ("score", result.score), ("lower", result.lower), ("sentences", result.n_sentences),
        ("flagged", result.n_flagged), ("unparseable", result.n_unparseable),
    )
    return [score_row(run_id, summary_id, "booookscore", variant, value, config, created, label=label)
            for variant, value in values]


def annotation_rows(run_id, summary_id, result, config: dict, created, label=None, source="llm") -> list[dict]:
    from pipelines.llm.recording import new_id

    digest = config_hash(config)
    return [{
        "annotation_id": new_id(), "run_id": run_id, "summary_id": summary_id, "label": label, "source": source,
        "version": result.version, "sentence_num": a.sentence_num, "sentence": a.sentence, "status": a.status,
        "flagged": a.flagged, "types": list(a.types), "questions": a.questions, "attempts": a.attempts,
        "answer": a.answer, "request_hash": a.request_hash, "note": a.note, "config_hash": digest,
        "created_at": created,
    } for a in result.annotations]


# -- the paper's released annotations ----------------------------------------------


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


# -- presentation --------------------------------------------------------------------


def summary_table(rows: Sequence[dict]) -> tuple[list[str], list[tuple]]:
    """Per-summary numbers (no per-reference rows) as columns and rows for rendering."""
    out = []
    for row in rows:
        if row["reference_id"] is not None:
            continue
        value = row["value"]
        out.append((row["metric"], row["variant"], row["aggregate"] or "", None if value is None else round(value, 4)))
    return ["metric", "variant", "aggregate", "value"], out


def options_fields() -> list[str]:
    return [f.name for f in fields(ScoringOptions)]


__all__ = [
    "METRICS", "ScoreJob", "ScoringError", "ScoringOptions", "final_summary", "import_booookscore",
    "parse_metrics", "score_run", "score_runs", "summary_table",
]
