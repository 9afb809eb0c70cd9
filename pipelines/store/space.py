"""The store's size: what no run references dropped, and the space given back (a file
copied and swapped when smaller; a lake's files merged)."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.store.connection import Store
from pipelines.store.errors import StoreError
from pipelines.store.schema import _sql_quote
from pipelines.store.spool import _fsync_folder


# What no run references: (label, DELETE). A paid answer stays even when its run is gone: it is
# what a later run replays instead of paying again. Texts go last, once no row names them.
VACUUM_DELETES = (
    ("chunk rows of runs that are gone", "DELETE FROM chunk_rows WHERE run_id NOT IN (SELECT run_id FROM runs)"),
    ("summary rows of runs that are gone", "DELETE FROM summary_rows WHERE run_id NOT IN (SELECT run_id FROM runs)"),
    ("compressed chunks of runs that are gone",
     "DELETE FROM compressed_chunks WHERE run_id NOT IN (SELECT run_id FROM runs)"),
    ("replayed and failed calls of runs that are gone",
     "DELETE FROM llm_call_rows WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT run_id FROM runs) "
     "AND (cached OR status IS DISTINCT FROM 'ok')"),
    ("documents stored twice (two writers that met: a lake)",
     "DELETE FROM documents WHERE rowid NOT IN (SELECT min(rowid) FROM documents GROUP BY doc_id)"),
    ("texts stored twice (a writer that met another: a lake)",
     "DELETE FROM texts WHERE rowid NOT IN (SELECT min(rowid) FROM texts GROUP BY hash)"),
    ("texts no row names",
     "DELETE FROM texts WHERE hash NOT IN (SELECT request_sha FROM llm_call_rows WHERE request_sha IS NOT NULL "
     "UNION ALL SELECT response_sha FROM llm_call_rows WHERE response_sha IS NOT NULL "
     "UNION ALL SELECT text_sha FROM chunk_rows WHERE text_sha IS NOT NULL "
     "UNION ALL SELECT text_sha FROM summary_rows WHERE text_sha IS NOT NULL)"),
)


def file_size(path: Path) -> int:
    """Bytes of a database file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".wal")) if p.exists())


def vacuum(store: Store, compact: bool = True) -> dict:
    """Drop what no run references (VACUUM_DELETES), then give the space back:
    CHECKPOINT, and (`compact`) a copy-and-swap: every table copied into a new
    file, which replaces this one when it is smaller (DuckDB reuses free blocks
    but never shrinks a file around them, and a fresh copy packs its segments
    tighter), while this process holds the lock, so no other process can write
    the old file after the copy. Returns sizes before and after and what was
    dropped."""
    import duckdb

    if store.lake is not None:
        return _vacuum_lake(store)
    before = file_size(store.path) if store.path.exists() else 0
    dropped = {}
    swapped = False
    with store.connect() as con:  # a writing connection: the spool is applied first
        con.execute("BEGIN TRANSACTION")
        for label, sql in VACUUM_DELETES:
            dropped[label] = con.execute(sql).fetchall()[0][0]
        con.execute("DELETE FROM spool_applied").fetchall()
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        if compact:
            swapped = _copy_and_swap(store, con)
    after = file_size(store.path)
    return {"path": str(store.path), "before": before, "after": after, "dropped": dropped, "swapped": swapped}


def _vacuum_lake(store: Store) -> dict:
    """VACUUM_DELETES in one lake commit, then DuckLake's own compaction (small files merged;
    the snapshots stay, so time travel still reaches before the vacuum)."""
    from pipelines.lake import data_path_of, folder_size

    dropped = {}
    with store.connect() as con:
        data = data_path_of(con)
        before = folder_size(data)

        def deletes():
            for label, sql in VACUUM_DELETES + (("spool entries applied", "DELETE FROM spool_applied"),):
                dropped[label] = con.execute(sql).fetchall()[0][0]
        store._commit_retrying(deletes, con)
        con.execute("CALL ducklake_merge_adjacent_files('lake')").fetchall()
    dropped.pop("spool entries applied", None)
    return {"path": str(store.path), "before": before, "after": folder_size(data), "dropped": dropped,
            "swapped": False}


def _copy_and_swap(store: Store, con) -> bool:
    """Copy the open database into FILE.vacuum; when that is smaller, it
    replaces FILE (`con` still holds the old file's lock). True when swapped."""
    copy = store.path.with_name(store.path.name + ".vacuum")
    for stale in (copy, copy.with_name(copy.name + ".wal")):
        stale.unlink(missing_ok=True)
    name = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"ATTACH '{_sql_quote(str(copy))}' AS longsum_vacuum")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO longsum_vacuum')
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND NOT internal", [name]).fetchall()]
        for table in tables:  # the copy has every row before it replaces anything
            counts = con.execute(f'SELECT (SELECT count(*) FROM "{name}".main."{table}"), '
                                 f'(SELECT count(*) FROM longsum_vacuum.main."{table}")').fetchall()[0]
            if counts[0] != counts[1]:
                raise StoreError(f"vacuum: the copy of {table} has {counts[1]} rows, not {counts[0]}; {store.path} kept")
        con.execute("CHECKPOINT longsum_vacuum")
    except BaseException:
        con.execute("DETACH longsum_vacuum")
        copy.unlink(missing_ok=True)
        raise
    con.execute("DETACH longsum_vacuum")
    if copy.stat().st_size >= store.path.stat().st_size:
        copy.unlink()
        return False
    with open(copy, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(copy, store.path)
    _fsync_folder(store.path.parent)
    return True
