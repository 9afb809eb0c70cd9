"""The LLM call journal: the `llm_calls` table (and the answers waiting in the spool) as
what `pipelines.llm` looks a request up in and records each call to."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Sequence

from pipelines.store.connection import Store
from pipelines.store.errors import StoreError
from pipelines.store.schema import CALLS_SELECT, utc
from pipelines.store.spool import read_spool
from pipelines.store.writes import insert_op


def _call_record(row: dict):
    """A CallRecord from a row of llm_calls (created_at a datetime in UTC)."""
    from pipelines.llm.recording import CallRecord

    names = CallRecord.__dataclass_fields__
    values = {k: v for k, v in row.items() if k in names}
    created = values.get("created_at")
    if isinstance(created, dt.datetime):
        values["created_at"] = created.replace(tzinfo=dt.timezone.utc).timestamp()
    return CallRecord(**values)


def spooled_call(store: Store, request_hash: str):
    """A successful, fresh call for this request that waits in the spool, or None."""
    for entry in read_spool(store):
        for op in entry["ops"]:
            if op.get("insert") != "llm_calls":
                continue
            for row in op["rows"]:
                if row.get("request_hash") == request_hash and row.get("status") == "ok" and not row.get("cached"):
                    return _call_record(row)
    return None


def _calls_with_texts(con, where: str, params: Sequence, tail: str = ""):
    """Rows of llm_calls (all its columns, as Arrow) without joining every
    text in the store: the rows first, then only the texts they name."""
    import pyarrow as pa

    rows = con.sql(f"SELECT * FROM llm_call_rows WHERE {where} {tail}", params=list(params)).to_arrow_table()
    hashes = sorted({h for column in ("request_sha", "response_sha") for h in rows.column(column).to_pylist() if h})
    texts = con.sql("SELECT hash, any_value(text) AS text FROM texts WHERE list_contains(?, hash) GROUP BY hash",
                    params=[hashes]).to_arrow_table() \
        if hashes else pa.table({"hash": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    con.register("_longsum_call_rows", rows)
    con.register("_longsum_texts", texts)
    try:
        return con.sql(CALLS_SELECT.format(rows="_longsum_call_rows", texts="_longsum_texts")).to_arrow_table()
    finally:
        con.unregister("_longsum_call_rows")
        con.unregister("_longsum_texts")


class DuckDBJournal:
    """The `llm_calls` table as the LLM call journal: one short write per call,
    committed as soon as the call returns, so nothing finished is ever lost.

    When another process holds the file past the store's timeout (a long SQL
    query, a second writer), a paid answer goes to the store's spool next to
    the database (`FILE.duckdb.spool.jsonl`) and the run goes on; the next
    writing connection, in this process or any other, merges it. Lookups see
    the spool too, so nothing it holds is requested again."""

    def __init__(self, store: Store):
        self.store = store
        self._pending: dict[str, object] = {}  # request_hash -> record kept in the spool
        self._pending_lock = threading.Lock()

    def lookup(self, request_hash: str):
        with self._pending_lock:
            if request_hash in self._pending:
                return self._pending[request_hash]
        found = spooled_call(self.store, request_hash)  # answers that wait for the file (any process's)
        if found is not None:
            return found
        try:
            with self.store.connect() as con:
                return self._lookup(con, request_hash)
        except StoreError:
            if self.store.lake is not None or not self.store.path.exists():
                raise
            # Held by a reader: a read-only connection still sees what is committed.
            with Store(self.store.path, timeout_s=0, read_only=True).connect() as con:
                return self._lookup(con, request_hash)

    @staticmethod
    def _lookup(con, request_hash: str):
        answered = "request_hash = ? AND status = 'ok' AND NOT cached"
        # A new run's lookups all miss: the index says so in well under a millisecond, where
        # joining the texts of no rows took ten.
        if not con.execute(f"SELECT 1 FROM llm_call_rows WHERE {answered} LIMIT 1", [request_hash]).fetchall():
            return None
        rows = _calls_with_texts(con, answered, [request_hash], "ORDER BY created_at LIMIT 1").to_pylist()
        return _call_record(rows[0]) if rows else None

    def record(self, record) -> None:
        row = dict(record.__dict__)
        row["created_at"] = utc(row["created_at"])
        if not self.store.write([insert_op("llm_calls", [row])]) and record.status == "ok" and not record.cached:
            with self._pending_lock:
                self._pending.setdefault(record.request_hash, record)
