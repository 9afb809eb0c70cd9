"""The DuckDB store: a public, SQL-queryable record of every document, run,
chunk, summary, LLM call and score.

DuckDB allows one writing process per file. longsum holds the file only for
the moment of each read or write (a connection per unit of work), so two
`summarize` processes on one file take turns instead of failing; a process
that finds the file locked retries for a bounded time, then stops with a
clear message. Rows are written in bulk through Arrow, never row by row.

The same store has a second target: a DuckLake (`--db ducklake:postgres:...`
or `ducklake:sqlite:PATH`, see `pipelines.lake`), for many writers on many
machines. Its tables and views are the same; what differs is kept in this
package (`connection`, `schema`): no key constraints or indexes (a lake has
none: writes never relied on them), readers take one of a text or document
two writers met twice (vacuum folds the rest), a commit that conflicts with
another writer's is retried within a bound (then spooled and reported),
every commit carries a message (who, the command, the run ids), and a
reader can open the lake as of any snapshot (`at`).

The package, one idea a module: `schema` (tables, views, version, migrations), `errors`,
`writes` (operations and the one table writer), `spool` (the side journal of writes a held
file could not take), `connection` (the `Store`: opening, waiting, committing, writing),
`journal` (the LLM call journal), `batches` (the provider batch journal), `runs` (a run's
rows shipped as Arrow), `export` (Parquet), `space` (vacuum, file size) and `copying` (a
file into a lake, and back). This module only re-exports what the rest of longsum imports.
"""

from pipelines.store.batches import DuckDBBatchJournal
from pipelines.store.connection import BLOCK_SIZE, Store
from pipelines.store.copying import copy_store
from pipelines.store.errors import StoreBusy, StoreError
from pipelines.store.export import export_parquet
from pipelines.store.journal import DuckDBJournal
from pipelines.store.runs import add_calls, add_run_tables, call_records, document_calls, record_calls, run_tables
from pipelines.store.schema import SCHEMA_VERSION, TABLES, layout_version, stored_schema_version, utc
from pipelines.store.space import file_size, vacuum
from pipelines.store.spool import read_spool, side_journal_path, spool_path
from pipelines.store.writes import insert_op, sql_op, write_table

__all__ = [
    "BLOCK_SIZE", "SCHEMA_VERSION", "TABLES", "DuckDBBatchJournal", "DuckDBJournal", "Store", "StoreBusy", "StoreError",
    "add_calls", "add_run_tables", "call_records", "copy_store", "document_calls", "export_parquet", "file_size",
    "insert_op", "layout_version", "read_spool", "record_calls", "run_tables", "side_journal_path", "spool_path",
    "sql_op", "stored_schema_version", "utc", "vacuum", "write_table",
]
