"""What a scoring request is: the metrics, the scorers' settings, the runs to
score, and the error for a request that cannot be carried out."""

from __future__ import annotations

from dataclasses import dataclass, fields
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


def options_fields() -> list[str]:
    return [f.name for f in fields(ScoringOptions)]
