"""The `evaluate_corpus` flow: documents x configurations, the experiment
design of the BooookScore paper, with every run and score in one DuckDB file
and a summary table at the end.

A source is a folder of documents (a `NAME.ref*.txt` file beside `NAME.txt`
is one of its reference summaries) or a SQuALITY `.jsonl` file (the plot
question's four answers are the references).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.runners import task_runner_for
from flows.summarize_flow import summarize_document
from pipelines.documents import CODE_LANGUAGES, PAPER_SUFFIXES
from pipelines.paths import longsum_home
from pipelines.store import Store, export_parquet

DOCUMENT_SUFFIXES = {".txt", *PAPER_SUFFIXES, *CODE_LANGUAGES}
DEFAULT_CONFIGS = ({"method": "hierarchical"}, {"method": "incremental"}, {"method": "extractive"})
CONFIG_KEYS = {
    "method", "model", "chunk_size", "summary_words", "compress", "compress_ratio", "base_url", "context_window", "concurrency",
}
SUMMARY_METRICS = ("rouge1_f", "rouge2_f", "rougeL_f", "rougeLsum_f", "bertscore_f1", "booookscore")


@dataclass(frozen=True)
class CorpusItem:
    path: str
    references: tuple[str, ...] = field(default_factory=tuple)


def load_corpus(source: str | Path, limit: int | None = None) -> list[CorpusItem]:
    source = Path(source).expanduser()
    if source.is_dir():
        items = _folder_items(source)
    elif source.suffix == ".jsonl":
        items = _squality_items(source, limit)
    else:
        raise ValueError(f"{source}: expected a folder of documents or a SQuALITY .jsonl file")
    if not items:
        raise ValueError(f"{source}: no documents found")
    return items[:limit] if limit else items


def _folder_items(folder: Path) -> list[CorpusItem]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
    documents = [p for p in files if ".ref" not in p.stem]
    items = []
    for doc in documents:
        refs = sorted(p for p in files if p.stem.startswith(f"{doc.stem}.ref"))
        items.append(CorpusItem(str(doc), tuple(p.read_text(encoding="utf-8") for p in refs)))
    return items


def _squality_items(path: Path, limit: int | None) -> list[CorpusItem]:
    """Stories become files under LONGSUM_HOME so runs point at real documents."""
    from scoring.squality import load_stories

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    folder = longsum_home() / "datasets" / f"squality-{path.stem}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for story in load_stories(path, limit):
        target = folder / f"{story.passage_id}.txt"
        if not target.exists() or target.read_text(encoding="utf-8") != story.text:
            target.write_text(story.text, encoding="utf-8")
        items.append(CorpusItem(str(target), story.references))
    return items


def _config_label(config: dict) -> str:
    parts = [config.get("method", "hierarchical"), config.get("model", "llamacpp")]
    parts += [f"{k}={config[k]}" for k in ("chunk_size", "summary_words", "compress", "compress_ratio") if k in config]
    return " ".join(str(p) for p in parts)


@flow(name="evaluate-corpus", flow_run_name="evaluate {source}", log_prints=True)
def evaluate_corpus(
    source: str,
    configs: list[dict] | None = None,
    metrics: list[str] | None = None,
    limit: int | None = None,
    db: str | None = None,
    dask_address: str | None = None,
    concurrency: int = 4,
    export_dir: str | None = None,
    resume: bool = True,
) -> list[dict]:
    """Summarize every document with every configuration, score, tabulate."""
    logger = get_run_logger()
    configs = [dict(c) for c in (configs or DEFAULT_CONFIGS)]
    for config in configs:
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; use {sorted(CONFIG_KEYS)}")
    items = load_corpus(source, limit)
    runner = task_runner_for(dask_address, concurrency)
    per_document = summarize_document.with_options(task_runner=runner)
    runs: list[dict] = []
    for item in items:
        wanted = list(metrics) if metrics is not None else (["rouge"] if item.references else [])
        for config in configs:
            result = per_document(
                path=item.path, references=list(item.references) or None, metrics=wanted or None, db=db,
                resume=resume, **{"concurrency": concurrency, **config},
            )
            runs.append({"label": _config_label(config), "document": Path(item.path).name, **result})
    table = summary_table(Store(db), runs)
    create_table_artifact(key="longsum-corpus", table=table, description=f"{len(items)} documents x {len(configs)} configurations")
    for row in table:
        logger.info("%s", row)
    if export_dir:
        batch = export_parquet(Store(db), [r["run_id"] for r in runs], export_dir)
        logger.info("exported this batch to %s", batch)
    return table


def summary_table(store: Store, runs: list[dict]) -> list[dict]:
    """Mean cost and scores per configuration over the given runs."""
    if not runs:
        return []
    by_label: dict[str, list[str]] = {}
    for run in runs:
        by_label.setdefault(run["label"], []).append(run["run_id"])
    wide_columns = {c for (c,) in store.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'scores_wide'")}
    metrics = [m for m in SUMMARY_METRICS if m in wide_columns]
    score_sql = "".join(f", avg(w.{m}) AS {m}" for m in metrics)
    join = "LEFT JOIN scores_wide w USING (run_id)" if metrics else ""
    table = []
    for label, run_ids in by_label.items():
        columns, rows = store.query(
            "SELECT count(*) AS runs, count(*) FILTER (WHERE r.status IN ('ok', 'degraded')) AS finished, "
            "avg(r.seconds) AS seconds, avg(r.llm_calls) AS llm_calls, avg(r.input_tokens + r.output_tokens) AS tokens"
            f"{score_sql} FROM runs r {join} WHERE list_contains(?, r.run_id)",
            [run_ids],
        )
        row = dict(zip(columns, rows[0]))
        table.append({"configuration": label, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}})
    return table
