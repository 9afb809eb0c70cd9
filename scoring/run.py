"""Scoring runs: each chosen metric's scorer called on the runs' final
summaries, its numbers turned into rows and written to the store in one go.

    from scoring import score_run
    rows = score_run(store, run_id, ["rouge", "bertscore", "booookscore"], references=[ref_text])

Heavy libraries (torch, bert_score, rouge_score, llama_cpp) are imported only
when a metric that needs them runs."""

from __future__ import annotations

from typing import Sequence

from scoring.options import METRICS, NEEDS_REFERENCES, ScoreJob, ScoringError, ScoringOptions, parse_metrics
from scoring.records import (annotation_rows, booookscore_score_rows, config_hash, final_summary, reference_id,
                             score_row, write)


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
    from pipelines.retrieval import EvidenceError, index_for_run
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
