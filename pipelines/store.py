"""The DuckDB store: a public, SQL-queryable record of every document, run,
chunk, summary, LLM call and score.

DuckDB allows one writing process per file. longsum holds the file only for
the moment of each read or write (a connection per unit of work), so two
`summarize` processes on one file take turns instead of failing; a process
that finds the file locked retries for a bounded time, then stops with a
clear message. Rows are written in bulk through Arrow, never row by row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from pipelines.paths import default_db_path

DEFAULT_TIMEOUT_S = 60.0
# The layout's version, kept in meta.schema_version. Additive changes (a new
# table or column, written with IF NOT EXISTS in SCHEMA below) need no new
# version: SCHEMA runs on every open and brings any older file up to date.
# A change SCHEMA cannot express (a backfill, a rename, a changed meaning)
# bumps the version and adds a step to MIGRATIONS. A file of a newer version
# than this code knows is refused, never written.
SCHEMA_VERSION = "2"
# from version -> statements that take a file of that version to the next one;
# they run before SCHEMA, in one transaction with the version update.
MIGRATIONS: dict[int, str] = {
    # 2: llm_calls.cache_write_tokens (prompt-cache writes, priced apart);
    # calls journaled before it wrote none.
    1: """
        ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS cache_write_tokens INTEGER;
        UPDATE llm_calls SET cache_write_tokens = 0 WHERE cache_write_tokens IS NULL;
    """,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS documents (
    doc_id VARCHAR PRIMARY KEY, path VARCHAR, title VARCHAR, kind VARCHAR, language VARCHAR,
    encoding VARCHAR, n_chars BIGINT, n_words BIGINT, sections JSON, first_seen TIMESTAMP
);
-- how the file was read: text | pdf | epub | html, PDF page count, extractor (pypdfium2, zipfile+lxml,
-- trafilatura, longsum) and its version, and what reading removed (Gutenberg header/licence ...)
ALTER TABLE documents ADD COLUMN IF NOT EXISTS format VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS pages INTEGER;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS extractor VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS extractor_version VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS metadata JSON;
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, doc_id VARCHAR, document_path VARCHAR, method VARCHAR,
    backend VARCHAR, model VARCHAR, chunk_size INTEGER, summary_words INTEGER, params JSON,
    status VARCHAR, error VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, seconds DOUBLE,
    n_chunks INTEGER, n_summaries INTEGER, degraded_summaries INTEGER,
    llm_calls INTEGER, cache_hits INTEGER, llm_errors INTEGER, input_tokens BIGINT,
    cached_input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE, llm_seconds DOUBLE,
    final_summary VARCHAR, pid INTEGER, host VARCHAR
);
CREATE TABLE IF NOT EXISTS chunks (
    run_id VARCHAR, idx INTEGER, start_char BIGINT, end_char BIGINT, n_tokens INTEGER,
    section VARCHAR, text VARCHAR
);
CREATE TABLE IF NOT EXISTS summaries (
    summary_id VARCHAR, run_id VARCHAR, level INTEGER, idx INTEGER, kind VARCHAR, text VARCHAR,
    n_words INTEGER, n_tokens INTEGER, token_limit INTEGER, word_limit INTEGER, attempts INTEGER,
    degraded BOOLEAN, salvaged BOOLEAN, note VARCHAR, first_chunk INTEGER, last_chunk INTEGER,
    request_hash VARCHAR, is_final BOOLEAN, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS llm_calls (
    call_id VARCHAR, run_id VARCHAR, request_hash VARCHAR, backend VARCHAR, model VARCHAR,
    template VARCHAR, template_hash VARCHAR, step VARCHAR, request JSON, response VARCHAR,
    finish_reason VARCHAR, input_tokens INTEGER, cached_input_tokens INTEGER, output_tokens INTEGER,
    latency_s DOUBLE, cost_usd DOUBLE, cached BOOLEAN, status VARCHAR, error VARCHAR,
    created_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS llm_calls_request_hash ON llm_calls (request_hash);
ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS cache_write_tokens INTEGER;
-- batch mode (pipelines/llm/batch.py): the provider batch that answered a call (NULL: a synchronous call)
ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS batch_id VARCHAR;
-- one row per provider batch submitted; request_hashes (the batch's custom ids) let a restarted
-- process wait on a batch still pending instead of submitting its requests again
CREATE TABLE IF NOT EXISTS llm_batches (
    batch_id VARCHAR PRIMARY KEY, provider VARCHAR, server VARCHAR, model VARCHAR, request_hashes JSON,
    n_requests INTEGER, status VARCHAR, created_at TIMESTAMP, finished_at TIMESTAMP, input_file_id VARCHAR,
    n_succeeded INTEGER, n_failed INTEGER, n_unfinished INTEGER, note VARCHAR
);
CREATE TABLE IF NOT EXISTS compressed_chunks (
    run_id VARCHAR, idx INTEGER, method VARCHAR, target_ratio DOUBLE, original_tokens INTEGER,
    compressed_tokens INTEGER, ratio DOUBLE, fallbacks INTEGER, text VARCHAR, report JSON
);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS compression VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tokens_before_compression BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tokens_after_compression BIGINT;
-- scoring (scoring/__init__.py documents the columns)
CREATE TABLE IF NOT EXISTS scores (
    score_id VARCHAR, run_id VARCHAR, summary_id VARCHAR, label VARCHAR, metric VARCHAR, variant VARCHAR,
    aggregate VARCHAR, reference_id VARCHAR, value DOUBLE, config JSON, config_hash VARCHAR,
    created_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS scores_run ON scores (run_id);
CREATE TABLE IF NOT EXISTS booookscore_annotations (
    annotation_id VARCHAR, run_id VARCHAR, summary_id VARCHAR, label VARCHAR, source VARCHAR,
    version VARCHAR, sentence_num INTEGER, sentence VARCHAR, status VARCHAR, flagged BOOLEAN,
    types JSON, questions VARCHAR, attempts INTEGER, answer VARCHAR, request_hash VARCHAR,
    note VARCHAR, config_hash VARCHAR, created_at TIMESTAMP
);
-- faithfulness and coverage (scoring/faithfulness.py, scoring/coverage.py, scoring/fables.py)
CREATE TABLE IF NOT EXISTS claims (
    claim_id VARCHAR, run_id VARCHAR, summary_id VARCHAR, set_label VARCHAR, source VARCHAR,
    claim_num INTEGER, sentence_num INTEGER, sentence VARCHAR, claim VARCHAR, status VARCHAR,
    label VARCHAR, reference_label VARCHAR, evidence JSON, evidence_found BOOLEAN, reason JSON,
    chunk_ids JSON, passages JSON, judge_model VARCHAR, attempts INTEGER, extract_attempts INTEGER,
    answer VARCHAR, extract_request_hash VARCHAR, judge_request_hash VARCHAR, note VARCHAR,
    config_hash VARCHAR, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS claim_summaries (
    run_id VARCHAR, summary_id VARCHAR, set_label VARCHAR, source VARCHAR, book VARCHAR, model VARCHAR,
    text VARCHAR, general_comment VARCHAR, n_claims INTEGER, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS coverage (
    run_id VARCHAR, summary_id VARCHAR, set_label VARCHAR, sentence_num INTEGER, sentence VARCHAR,
    chunk_idx INTEGER, start_char BIGINT, end_char BIGINT, position DOUBLE, decile INTEGER,
    similarity DOUBLE, lexical DOUBLE, grounded BOOLEAN, config_hash VARCHAR, created_at TIMESTAMP
);
-- evaluations (pipelines/evaluate.py): one row each; a pair's result the moment it finishes, so a
-- killed evaluation resumes with the pairs that have none
CREATE TABLE IF NOT EXISTS corpora (
    corpus_id VARCHAR, key VARCHAR, source VARCHAR, configurations JSON, metrics JSON, started_at TIMESTAMP,
    finished_at TIMESTAMP, pid INTEGER, host VARCHAR, resumed INTEGER
);
CREATE TABLE IF NOT EXISTS corpus_results (
    corpus_id VARCHAR, item VARCHAR, configuration VARCHAR, run_id VARCHAR, status VARCHAR, seconds DOUBLE,
    error VARCHAR, scores JSON, finished_at TIMESTAMP
);
CREATE OR REPLACE VIEW scores_wide AS
WITH latest AS (
    SELECT run_id, summary_id, metric, variant, aggregate, arg_max_null(value, created_at) AS value,
        arg_max(config, created_at) AS config, arg_max(label, created_at) AS label, max(created_at) AS created_at
    FROM scores WHERE reference_id IS NULL
    GROUP BY run_id, summary_id, metric, variant, aggregate
)
SELECT
    run_id,
    arg_max(label, created_at) AS label,
    count(DISTINCT summary_id) AS n_summaries,
    avg(value) FILTER (WHERE metric = 'rouge1' AND variant = 'p' AND aggregate = 'max') AS rouge1_p,
    avg(value) FILTER (WHERE metric = 'rouge1' AND variant = 'r' AND aggregate = 'max') AS rouge1_r,
    avg(value) FILTER (WHERE metric = 'rouge1' AND variant = 'f' AND aggregate = 'max') AS rouge1_f,
    avg(value) FILTER (WHERE metric = 'rouge1' AND variant = 'f' AND aggregate = 'mean') AS rouge1_f_mean,
    avg(value) FILTER (WHERE metric = 'rouge2' AND variant = 'p' AND aggregate = 'max') AS rouge2_p,
    avg(value) FILTER (WHERE metric = 'rouge2' AND variant = 'r' AND aggregate = 'max') AS rouge2_r,
    avg(value) FILTER (WHERE metric = 'rouge2' AND variant = 'f' AND aggregate = 'max') AS rouge2_f,
    avg(value) FILTER (WHERE metric = 'rouge2' AND variant = 'f' AND aggregate = 'mean') AS rouge2_f_mean,
    avg(value) FILTER (WHERE metric = 'rougeL' AND variant = 'p' AND aggregate = 'max') AS rougeL_p,
    avg(value) FILTER (WHERE metric = 'rougeL' AND variant = 'r' AND aggregate = 'max') AS rougeL_r,
    avg(value) FILTER (WHERE metric = 'rougeL' AND variant = 'f' AND aggregate = 'max') AS rougeL_f,
    avg(value) FILTER (WHERE metric = 'rougeL' AND variant = 'f' AND aggregate = 'mean') AS rougeL_f_mean,
    avg(value) FILTER (WHERE metric = 'rougeLsum' AND variant = 'p' AND aggregate = 'max') AS rougeLsum_p,
    avg(value) FILTER (WHERE metric = 'rougeLsum' AND variant = 'r' AND aggregate = 'max') AS rougeLsum_r,
    avg(value) FILTER (WHERE metric = 'rougeLsum' AND variant = 'f' AND aggregate = 'max') AS rougeLsum_f,
    avg(value) FILTER (WHERE metric = 'rougeLsum' AND variant = 'f' AND aggregate = 'mean') AS rougeLsum_f_mean,
    avg(value) FILTER (WHERE metric = 'bertscore' AND variant = 'p' AND aggregate = 'max') AS bertscore_p,
    avg(value) FILTER (WHERE metric = 'bertscore' AND variant = 'r' AND aggregate = 'max') AS bertscore_r,
    avg(value) FILTER (WHERE metric = 'bertscore' AND variant = 'f1' AND aggregate = 'max') AS bertscore_f1,
    avg(value) FILTER (WHERE metric = 'bertscore' AND variant = 'f1' AND aggregate = 'mean') AS bertscore_f1_mean,
    avg(value) FILTER (WHERE metric = 'booookscore' AND variant = 'score' AND aggregate IS NULL) AS booookscore,
    avg(value) FILTER (WHERE metric = 'booookscore' AND variant = 'lower' AND aggregate IS NULL) AS booookscore_lower,
    sum(value) FILTER (WHERE metric = 'booookscore' AND variant = 'sentences' AND aggregate IS NULL) AS booookscore_sentences,
    sum(value) FILTER (WHERE metric = 'booookscore' AND variant = 'flagged' AND aggregate IS NULL) AS booookscore_flagged,
    sum(value) FILTER (WHERE metric = 'booookscore' AND variant = 'unparseable' AND aggregate IS NULL) AS booookscore_unparseable,
    sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'n_yes' AND aggregate IS NULL)
        / nullif(sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'judged' AND aggregate IS NULL), 0)
        AS faithfulness_yes,
    (sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'n_yes' AND aggregate IS NULL)
        + sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'n_partial' AND aggregate IS NULL))
        / nullif(sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'judged' AND aggregate IS NULL), 0)
        AS faithfulness_supported,
    sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'claims' AND aggregate IS NULL) AS faithfulness_claims,
    sum(value) FILTER (WHERE metric = 'faithfulness' AND variant = 'unparseable' AND aggregate IS NULL) AS faithfulness_unparseable,
    avg(value) FILTER (WHERE metric = 'coverage' AND variant = 'deciles' AND aggregate IS NULL) AS coverage_deciles,
    avg(value) FILTER (WHERE metric = 'coverage' AND variant = 'end_share' AND aggregate IS NULL) AS coverage_end_share,
    avg(value) FILTER (WHERE metric = 'coverage' AND variant = 'grounded' AND aggregate IS NULL) AS coverage_grounded,
    arg_max(config->>'model', created_at) FILTER (WHERE metric = 'faithfulness') AS faithfulness_model,
    arg_max(config->>'model', created_at) FILTER (WHERE metric = 'bertscore') AS bertscore_model,
    arg_max(config->>'model', created_at) FILTER (WHERE metric = 'booookscore') AS booookscore_model,
    max(created_at) AS scored_at
FROM latest
GROUP BY run_id;
"""

TABLES = (
    "documents", "runs", "chunks", "compressed_chunks", "summaries", "llm_calls", "scores", "booookscore_annotations",
    "claims", "claim_summaries", "coverage", "llm_batches", "corpora", "corpus_results",
)
_LOCKED = re.compile(r"lock|being used by another process", re.IGNORECASE)
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


class StoreError(RuntimeError):
    """A database problem, described in one line for the user."""


def utc(timestamp: float | None = None) -> dt.datetime:
    """Naive UTC datetime (the store's TIMESTAMP columns are UTC)."""
    moment = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.timezone.utc)
    return moment.replace(tzinfo=None)


class Store:
    def __init__(self, path: str | Path | None = None, timeout_s: float | None = None, read_only: bool = False):
        self.path = Path(path).expanduser() if path else default_db_path()
        env_timeout = os.environ.get("LONGSUM_DB_TIMEOUT")
        self.timeout_s = timeout_s if timeout_s is not None else float(env_timeout or DEFAULT_TIMEOUT_S)
        self.read_only = read_only
        self._schema_ready = False  # read-only stores check the version too
        self._held = None  # the connection of a `held()` block
        key = str(self.path.resolve())
        with _PROCESS_LOCKS_GUARD:
            self._lock = _PROCESS_LOCKS.setdefault(key, threading.RLock())

    # -- connections -------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, config: dict | None = None) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        """A connection held only for the block; waits (bounded) for other processes."""
        with self._lock:
            if self._held is not None:
                cursor = self._held.cursor()  # a connection of its own to the open database: no file open
                try:
                    yield cursor
                finally:
                    cursor.close()
                return
            con = self._open(config or {})
            try:
                if not self._schema_ready:
                    if self.read_only:
                        if self._check_version_read_only(con):
                            con.close()
                            self._migrate_for_reading()
                            con = self._open(config or {})
                    else:
                        self._prepare_schema(con)
                    self._schema_ready = True
                if not self.read_only:
                    merge_side_journal(self, con)
                yield con
            finally:
                con.close()

    @contextlib.contextmanager
    def held(self) -> Iterator["Store"]:
        """One connection for the whole block instead of one per unit of work
        (each open costs ~25 ms): for a file no other process uses, such as a
        worker's private store. Threads still take turns on it."""
        with self.connect() as con:
            pass  # schema ready, side journal merged
        with self._lock:
            self._held = self._open({})
        try:
            yield self
        finally:
            with self._lock:
                self._held.close()
                self._held = None

    def _prepare_schema(self, con) -> None:
        """Create, migrate or refuse (see SCHEMA_VERSION)."""
        found = stored_schema_version(con)
        current = int(SCHEMA_VERSION)
        if found is not None and found > current:
            raise StoreError(_newer_schema(self.path, found))
        con.execute("BEGIN TRANSACTION")
        try:
            if found is not None:
                for version in range(found, current):
                    if version in MIGRATIONS:
                        con.execute(MIGRATIONS[version])
            con.execute(SCHEMA)
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                [SCHEMA_VERSION],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _check_version_read_only(self, con) -> bool:
        """True when the file is older than this code and must be migrated first."""
        found = stored_schema_version(con)
        if found is not None and found > int(SCHEMA_VERSION):
            raise StoreError(_newer_schema(self.path, found))
        return found is not None and found < int(SCHEMA_VERSION)

    def _migrate_for_reading(self) -> None:
        """An older file opened for reading is migrated once, through a short
        writing connection, so queries see the current layout."""
        try:
            with Store(self.path, timeout_s=self.timeout_s).connect():
                pass
        except StoreError as exc:
            raise StoreError(
                f"database {self.path} has an older schema than this longsum's {SCHEMA_VERSION} "
                f"and cannot be migrated: {exc}"
            ) from None

    def _open(self, config: dict):
        import duckdb

        if self.read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path} yet (run summarize first, or pass --db)")
        if not self.read_only:
            self._check_writable()
        deadline = time.monotonic() + self.timeout_s
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only, config=config)
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCKED.search(message) and "not a valid" not in message:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"database {self.path} is in use by another process{_holder(message)}; "
                            f"gave up after {self.timeout_s:g} s (set LONGSUM_DB_TIMEOUT to wait longer, "
                            f"or use --db with another file)"
                        ) from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                raise StoreError(_describe_open_error(self.path, message)) from None
            except duckdb.Error as exc:
                raise StoreError(_describe_open_error(self.path, str(exc))) from None

    def _check_writable(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database folder {folder}: {exc.strerror}") from None
        if self.path.is_dir():
            raise StoreError(f"database path {self.path} is a directory")
        target = self.path if self.path.exists() else folder
        if not os.access(target, os.W_OK):
            raise StoreError(f"database {self.path} is not writable (read-only file or folder)")

    # -- writes ------------------------------------------------------------

    def insert_rows(self, table: str, rows: Sequence[dict], con=None, ignore_conflicts: bool = False) -> int:
        """Bulk insert (Arrow) of dict rows whose keys are column names."""
        if table not in TABLES and not table.startswith(("scores", "booookscore_")):
            raise ValueError(f"unknown table {table}")
        if not rows:
            return 0
        import pyarrow as pa

        batch = pa.Table.from_pylist([_jsonable(r) for r in rows])
        with contextlib.ExitStack() as stack:
            con = con or stack.enter_context(self.connect())
            con.register("_longsum_rows", batch)
            try:
                conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _longsum_rows{conflict}")
            finally:
                con.unregister("_longsum_rows")
        return len(rows)

    def execute(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            return cursor.fetchall() if cursor.description else []

    def query(self, sql: str, params: Sequence | None = None) -> tuple[list[str], list[tuple]]:
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall() if cursor.description else []


def stored_schema_version(con) -> int | None:
    """meta.schema_version of an open file; None for a new, empty file. A file
    with longsum's tables but no version row (meta missing or empty) is not
    new: its version is read from its layout (`layout_version`)."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchone()[0]
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
    if row is None:
        return layout_version(con)
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"database has an unreadable schema version {row[0]!r}") from None


# What each version added that SCHEMA's IF NOT EXISTS cannot tell apart from
# an older file: version -> (table, column) first written by it.
LAYOUT_MARKERS: dict[int, tuple[str, str]] = {2: ("llm_calls", "cache_write_tokens")}


def layout_version(con) -> int | None:
    """The schema version a file's tables show, for a file without a version
    row: None when it has none of longsum's tables (a new file), else the
    newest version whose markers (and every earlier one's) are all present,
    1 at least, so that every migration after it runs."""
    found: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall():
        found.setdefault(table, set()).add(column)
    if not set(found) & set(TABLES):
        return None
    version = 1
    for marked in sorted(LAYOUT_MARKERS):
        table, column = LAYOUT_MARKERS[marked]
        if column not in found.get(table, set()):
            break
        version = marked
    return version


def _newer_schema(path: Path, found: int) -> str:
    return (
        f"database {path} has schema version {found}, newer than this longsum's {SCHEMA_VERSION}: "
        f"upgrade longsum, or use --db with another file"
    )


def _jsonable(row: dict) -> dict:
    return {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in row.items()}


def _holder(message: str) -> str:
    match = re.search(r"PID (\d+)", message)
    return f" (PID {match.group(1)})" if match else ""


def _describe_open_error(path: Path, message: str) -> str:
    lowered = message.lower()
    if "not a valid duckdb database" in lowered or "invalid" in lowered and "database" in lowered:
        return f"{path} is not a DuckDB database (pass --db with a new or existing .duckdb file)"
    if "permission denied" in lowered or "read-only" in lowered or "readonly" in lowered:
        return f"database {path} is not writable ({message.splitlines()[0][:120]})"
    if "version" in lowered and "storage" in lowered:
        return f"{path} was written by an incompatible DuckDB version"
    return f"cannot open database {path}: {message.splitlines()[0][:200]}"


def side_journal_path(store: Store) -> Path:
    return store.path.with_name(store.path.name + ".calls.jsonl")


@contextlib.contextmanager
def _locked_side_journal(path: Path, mode: str):
    """The side journal, under an exclusive flock: appends and the merge that
    empties it never interleave, across threads and processes."""
    import fcntl

    with open(path, mode, encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_side_journal(store: Store, record) -> None:
    """Keep a paid answer that the database could not take (held by another
    process past the timeout): one JSON line, flushed to disk before returning."""
    with _locked_side_journal(side_journal_path(store), "a") as fh:
        fh.write(json.dumps(dict(record.__dict__), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_side_journal(store: Store) -> list:
    from pipelines.llm.recording import CallRecord

    path = side_journal_path(store)
    if not path.exists() or path.stat().st_size == 0:
        return []
    with _locked_side_journal(path, "r") as fh:
        lines = fh.read().splitlines()
    return [CallRecord(**json.loads(line)) for line in lines if line.strip()]


def merge_side_journal(store: Store, con) -> int:
    """Move the side journal's records into llm_calls (those not there yet, by
    call_id), then empty it; runs at every writing connection while it has lines."""
    path = side_journal_path(store)
    try:
        if path.stat().st_size == 0:
            return 0
    except FileNotFoundError:
        return 0
    from pipelines.llm.recording import CallRecord

    with _locked_side_journal(path, "r+") as fh:
        records = [CallRecord(**json.loads(line)) for line in fh.read().splitlines() if line.strip()]
        if records:
            known = {row[0] for row in con.execute(
                "SELECT call_id FROM llm_calls WHERE list_contains(?, call_id)", [[r.call_id for r in records]]
            ).fetchall()}
            rows = [{**r.__dict__, "created_at": utc(r.created_at)} for r in records if r.call_id not in known]
            store.insert_rows("llm_calls", rows, con=con)
        fh.seek(0)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())
    return len(records)


class DuckDBJournal:
    """The `llm_calls` table as the LLM call journal: one short write per call,
    committed as soon as the call returns, so nothing finished is ever lost.

    When another process holds the file past the store's timeout (a long SQL
    query, a second writer), a paid answer goes to the side journal next to
    the database (`FILE.duckdb.calls.jsonl`) and the run goes on; the next
    writing connection, in this process or any other, merges it. Lookups see
    the side journal too, so nothing it holds is requested again."""

    def __init__(self, store: Store):
        self.store = store
        self._pending: dict[str, object] = {}  # request_hash -> record kept in the side journal
        self._pending_lock = threading.Lock()

    def lookup(self, request_hash: str):
        with self._pending_lock:
            if request_hash in self._pending:
                return self._pending[request_hash]
        try:
            with self.store.connect() as con:
                found = self._lookup(con, request_hash)
        except StoreError:
            if not self.store.path.exists():
                raise
            # Held by a reader: a read-only connection still sees what is committed.
            with Store(self.store.path, timeout_s=0, read_only=True).connect() as con:
                found = self._lookup(con, request_hash)
        if found is None:
            found = next((r for r in read_side_journal(self.store)
                          if r.request_hash == request_hash and r.status == "ok" and not r.cached), None)
        return found

    @staticmethod
    def _lookup(con, request_hash: str):
        from pipelines.llm.recording import CallRecord

        cursor = con.execute(
            "SELECT * EXCLUDE (created_at), epoch(created_at) AS created_at FROM llm_calls "
            "WHERE request_hash = ? AND status = 'ok' AND NOT cached ORDER BY created_at LIMIT 1",
            [request_hash],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        return CallRecord(**dict(zip([d[0] for d in cursor.description], row)))

    def record(self, record) -> None:
        row = dict(record.__dict__)
        row["created_at"] = utc(row["created_at"])
        try:
            self.store.insert_rows("llm_calls", [row])
        except StoreError as exc:
            if "in use by another process" not in str(exc):
                raise
            append_side_journal(self.store, record)
            if record.status == "ok" and not record.cached:
                with self._pending_lock:
                    self._pending.setdefault(record.request_hash, record)


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


def record_calls(store: Store, run_id: str, records: list) -> list:
    """Write call records returned by workers, in bulk; returns them as written.
    A record whose call_id is already stored (a task result replayed by the
    orchestrator's cache) becomes a cached replay for this run, so a call is
    never counted twice."""
    import dataclasses

    if not records:
        return []
    ids = [r.call_id for r in records]
    with store.connect() as con:
        known = {row[0] for row in con.execute("SELECT call_id FROM llm_calls WHERE list_contains(?, call_id)", [ids]).fetchall()}
        written, rows = [], []
        for record in records:
            if record.call_id in known:
                record = dataclasses.replace(record, call_id=_new_call_id(), cached=True)
            record = dataclasses.replace(record, run_id=run_id)
            written.append(record)
            rows.append({**record.__dict__, "created_at": utc(record.created_at)})
        store.insert_rows("llm_calls", rows, con=con)
    return written


def _new_call_id() -> str:
    import uuid

    return uuid.uuid4().hex


def document_calls(store: Store, doc_id: str):
    """The successful, fresh LLM calls of every earlier run of one document, as
    an Arrow table: what a worker on another machine needs to replay them."""
    with store.connect() as con:
        return con.sql(
            "SELECT * FROM llm_calls WHERE status = 'ok' AND NOT cached "
            "AND run_id IN (SELECT run_id FROM runs WHERE doc_id = ?)",
            params=[doc_id],
        ).to_arrow_table()


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
    """Every row of one run, table by table (Arrow): what a worker that ran it
    in a store of its own hands back to the flow's writer."""
    with store.connect() as con:
        tables = [t for (t,) in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = 'run_id' "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"
        ).fetchall()]
        rows = {t: con.sql(f'SELECT * FROM "{t}" WHERE run_id = ?', params=[run_id]).to_arrow_table() for t in tables}
        rows["documents"] = con.sql(
            "SELECT * FROM documents WHERE doc_id IN (SELECT doc_id FROM runs WHERE run_id = ?)", params=[run_id]
        ).to_arrow_table()
    return rows


def add_run_tables(store: Store, tables: dict) -> None:
    """Write what `run_tables` returned, in one transaction (a document seen before is kept)."""
    with store.connect() as con:
        con.execute("BEGIN")
        for name, table in tables.items():
            if table.num_rows == 0:
                continue
            con.register("_longsum_rows", table)
            try:
                conflict = " ON CONFLICT DO NOTHING" if name == "documents" else ""
                con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _longsum_rows{conflict}')
            finally:
                con.unregister("_longsum_rows")
        con.execute("COMMIT")


def add_calls(store: Store, table) -> None:
    """Replayable calls (from `document_calls`) into another store."""
    if table.num_rows:
        add_run_tables(store, {"llm_calls": table})


EXPORT_TABLES = ("runs", "chunks", "compressed_chunks", "summaries", "llm_calls", "scores", "booookscore_annotations",
                 "claims", "claim_summaries", "coverage")


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
