"""Scores as store rows: the ids and hashes they carry, the run's final
summary they are computed on, and one transaction that writes them.

Every number is one row of the long-format `scores` table (run, summary,
metric, variant, aggregate, reference) with the scorer's settings as JSON in
`config` and their hash in `config_hash`; BooookScore's sentence notes are
rows of `booookscore_annotations`."""

from __future__ import annotations

import hashlib
import json

from scoring.options import ScoringError


def reference_id(text: str, name: str | None = None) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{name}:{digest}" if name else digest


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
