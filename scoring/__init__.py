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

Where it lives: `scoring.options` (metrics, settings, jobs, the error),
`scoring.run` (scoring runs), `scoring.records` (rows and their write),
`scoring.booookscore_import` (the paper's released annotations),
`scoring.table` (rows as a terminal table); one module per metric beside them.
"""

from __future__ import annotations

from scoring.booookscore_import import import_booookscore
from scoring.options import METRICS, ScoreJob, ScoringError, ScoringOptions, parse_metrics
from scoring.records import final_summary, reference_id, write
from scoring.run import score_run, score_runs
from scoring.table import summary_table

__all__ = [
    "METRICS", "ScoreJob", "ScoringError", "ScoringOptions", "final_summary", "import_booookscore",
    "parse_metrics", "reference_id", "score_run", "score_runs", "summary_table", "write",
]
