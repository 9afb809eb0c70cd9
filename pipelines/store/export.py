"""Runs exported as Parquet, one file per table, for DuckDB to read back with a glob."""

from __future__ import annotations

from pathlib import Path

from pipelines.store.connection import Store
from pipelines.store.schema import utc


EXPORT_TABLES = ("runs", "chunks", "compressed_chunks", "summaries", "llm_calls", "scores", "booookscore_annotations",
                 "claims", "claim_summaries", "coverage", "citations")


def export_parquet(store: Store, run_ids: list[str], folder: str | Path) -> Path:
    """Write everything about these runs as one Parquet file per table into a
    new batch folder, for DuckDB to read back with a glob:
    `SELECT * FROM read_parquet('FOLDER/*/runs.parquet')`."""
    import uuid

    batch = Path(folder).expanduser() / f"batch-{utc():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    batch.mkdir(parents=True, exist_ok=False)
    with store.connect() as con:
        present = {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in EXPORT_TABLES:
            if table in present:
                con.sql(f"SELECT * FROM {table} WHERE list_contains(?, run_id)", params=[list(run_ids)]).write_parquet(
                    str(batch / f"{table}.parquet")
                )
        con.sql(
            "SELECT * FROM documents WHERE doc_id IN (SELECT doc_id FROM runs WHERE list_contains(?, run_id))",
            params=[list(run_ids)],
        ).write_parquet(str(batch / "documents.parquet"))
    return batch
