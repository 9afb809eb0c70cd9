"""A run's rows shipped between stores as Arrow: a worker that ran in a store of its own
hands them to the flow's writer, and the calls of a document's earlier runs go to a worker
to replay."""

from __future__ import annotations

import datetime as dt

from pipelines.store.connection import Store
from pipelines.store.journal import _calls_with_texts
from pipelines.store.schema import ADDRESSED, ROW_TABLES, utc
from pipelines.store.writes import insert_op


def record_calls(store: Store, run_id: str, records: list) -> None:
    """Write call records returned by workers, in bulk, under this run (spooled
    when the file is held). A record whose call_id is already stored (a task
    result replayed by the orchestrator's cache) becomes a cached replay for
    this run, so a call is never counted twice."""
    if records:
        rows = [{**r.__dict__, "run_id": run_id, "created_at": utc(r.created_at)} for r in records]
        store.write([insert_op("llm_calls", rows, known_calls="replay")])


def document_calls(store: Store, doc_id: str):
    """The successful, fresh LLM calls of every earlier run of one document, as
    an Arrow table: what a worker on another machine needs to replay them."""
    with store.connect() as con:
        return _calls_with_texts(
            con, "status = 'ok' AND NOT cached AND run_id IN (SELECT run_id FROM runs WHERE doc_id = ?)", [doc_id])


def call_records(table) -> dict:
    """request_hash -> CallRecord, for a `MemoryJournal` to replay."""
    from pipelines.llm.recording import CallRecord

    names = {f for f in CallRecord.__dataclass_fields__}
    records = {}
    for row in table.to_pylist():
        row["created_at"] = row["created_at"].replace(tzinfo=dt.timezone.utc).timestamp()
        records.setdefault(row["request_hash"], CallRecord(**{k: v for k, v in row.items() if k in names}))
    return records


def run_tables(store: Store, run_id: str) -> dict:
    """Every row of one run, table by table (Arrow, by public name: `llm_calls`,
    `chunks` and `summaries` with their texts): what a worker that ran it in a
    store of its own hands back to the flow's writer."""
    with store.connect() as con:
        tables = [t for (t,) in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = 'run_id' "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE') "
            "AND NOT list_contains(?, table_name)", [list(ROW_TABLES)]
        ).fetchall()] + list(ADDRESSED)
        rows = {t: con.sql(f'SELECT * FROM "{t}" WHERE run_id = ?', params=[run_id]).to_arrow_table() for t in tables}
        rows["documents"] = con.sql(
            "SELECT * FROM documents WHERE doc_id IN (SELECT doc_id FROM runs WHERE run_id = ?)", params=[run_id]
        ).to_arrow_table()
    return rows


def add_run_tables(store: Store, tables: dict) -> None:
    """Write what `run_tables` returned, in one transaction (a document seen
    before is kept); spooled when the file is held."""
    store.write([insert_op(name, arrow=table, ignore_conflicts=name == "documents") for name, table in tables.items()])


def add_calls(store: Store, table) -> None:
    """Replayable calls (from `document_calls`) into another store."""
    if table.num_rows:
        add_run_tables(store, {"llm_calls": table})
