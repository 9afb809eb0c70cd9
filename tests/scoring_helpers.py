"""Helpers for the scoring tests: a run with a final summary in a store."""

from __future__ import annotations

from pipelines.llm.recording import new_id
from pipelines.runner import summary_row
from pipelines.store import utc
from pipelines.summarize.common import SummaryRecord


def make_run(store, summary: str, method: str = "hierarchical") -> str:
    """Write a finished run whose final summary is `summary`; return its id."""
    run_id = new_id()
    store.insert_rows("runs", [{
        "run_id": run_id, "doc_id": "test-doc", "document_path": "test.txt", "method": method,
        "model": "test", "status": "ok", "started_at": utc(), "final_summary": summary,
    }])
    record = SummaryRecord(level=1, idx=0, kind="merge", text=summary, token_limit=900, word_limit=585,
                           first_chunk=0, last_chunk=0, is_final=True)
    store.insert_rows("summaries", [summary_row(run_id, record)])
    return run_id
