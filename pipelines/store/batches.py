"""The provider batch journal: the `llm_batches` table."""

from __future__ import annotations

import json

from pipelines.store.connection import Store
from pipelines.store.schema import utc


class DuckDBBatchJournal:
    """The `llm_batches` table as the batch journal of `pipelines.llm.batch`:
    a batch is recorded the moment the provider accepted it, so a process
    that dies while waiting leaves its id for the next one to wait on."""

    def __init__(self, store: Store):
        self.store = store

    def started(self, batch_id: str, provider: str, server: str | None, model: str, request_hashes: list[str],
                input_file_id: str | None = None) -> None:
        self.store.insert_rows("llm_batches", [{
            "batch_id": batch_id, "provider": provider, "server": server, "model": model,
            "request_hashes": list(request_hashes), "n_requests": len(request_hashes), "status": "submitted",
            "created_at": utc(), "input_file_id": input_file_id,
        }])

    def finished(self, batch_id: str, status: str, succeeded: int, failed: int, unfinished: int,
                 note: str | None = None) -> None:
        self.store.execute(
            "UPDATE llm_batches SET status = ?, finished_at = ?, n_succeeded = ?, n_failed = ?, n_unfinished = ?, "
            "note = ? WHERE batch_id = ?", [status, utc(), succeeded, failed, unfinished, note, batch_id],
        )

    def pending(self, provider: str, server: str | None, model: str) -> dict[str, list[str]]:
        """batch_id -> request hashes of this endpoint's batches not finished yet."""
        rows = self.store.execute(
            "SELECT batch_id, request_hashes FROM llm_batches WHERE provider = ? AND server IS NOT DISTINCT FROM ? "
            "AND model = ? AND status = 'submitted' ORDER BY created_at", [provider, server, model],
        )
        return {batch_id: json.loads(hashes) if isinstance(hashes, str) else list(hashes) for batch_id, hashes in rows}
