"""The DuckDB store: a public, SQL-queryable record of every document, run,
chunk, summary, LLM call and score.

DuckDB allows one writing process per file. longsum holds the file only for
the moment of each read or write (a connection per unit of work), so two
`summarize` processes on one file take turns instead of failing; a process
that finds the file locked retries for a bounded time, then stops with a
clear message. Rows are written in bulk through Arrow, never row by row.

The same store has a second target: a DuckLake (`--db ducklake:postgres:...`
or `ducklake:sqlite:PATH`, see `pipelines.lake`), for many writers on many
machines. Its tables and views are the same; what differs is kept here, in
one place: no key constraints or indexes (a lake has none: writes never
relied on them), readers take one of a text or document two writers met
twice (vacuum folds the rest), a commit that conflicts with another
writer's is retried within a bound (then spooled and reported), every
commit carries a message (who, the command, the run ids), and a reader can
open the lake as of any snapshot (`at`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from pipelines.lake import At, Lake, LakeError, is_lake
from pipelines.paths import default_db

DEFAULT_TIMEOUT_S = 60.0
# The layout's version, kept in meta.schema_version. Additive changes (a new
# table or column, written with IF NOT EXISTS in SCHEMA below) need no new
# version: SCHEMA runs on every open and brings any older file up to date.
# A change SCHEMA cannot express (a backfill, a rename, a changed meaning)
# bumps the version and adds a step to MIGRATIONS. A file of a newer version
# than this code knows is refused, never written.
SCHEMA_VERSION = "3"
# New files get 64 KiB blocks, not DuckDB's 256 KiB: a run appends a few rows to many small
# tables and each checkpoint moves every changed block, so a file of 256 KiB blocks grew by
# whole blocks from re-run to re-run (the demo story: 5.3 MB, up to 1.15x after identical
# re-runs; with 64 KiB 2.6 MB, 1.00x; bench/bench_store_size.py). 16 KiB gave a smaller
# demo file but a compacted copy that grew 1.21x on a 466-call run. Older files keep theirs.
BLOCK_SIZE = 65_536

# Content-addressed storage (version 3). Every distinct text (an LLM request or
# response, a chunk, a summary) is stored once in `texts`, keyed by the SHA-256
# of its UTF-8 bytes; the rows of `llm_calls`, `chunks` and `summaries` live in
# row tables that name their texts by hash, and those three public names are
# views that join the texts back (same columns, same order as before). A
# re-run that replays every call adds rows of ids and numbers, not text.
# Writes go through `write_table`, the one writer of every table; it adds a
# text only when its hash is not there yet (an anti-join: no index to load,
# and no key constraint, which a DuckLake would not have). Long strings are
# compressed with zstd: DuckDB leaves them uncompressed otherwise (duckdb#20664),
# and texts are mostly long (a request carries its chunk).
ADDRESSED_TABLES = """
CREATE TABLE IF NOT EXISTS texts (hash VARCHAR, text VARCHAR{text_compression});
CREATE TABLE IF NOT EXISTS llm_call_rows (
    call_id VARCHAR, run_id VARCHAR, request_hash VARCHAR, backend VARCHAR, model VARCHAR,
    template VARCHAR, template_hash VARCHAR, step VARCHAR, request_sha VARCHAR, response_sha VARCHAR,
    finish_reason VARCHAR, input_tokens INTEGER, cached_input_tokens INTEGER, output_tokens INTEGER,
    latency_s DOUBLE, cost_usd DOUBLE, cached BOOLEAN, status VARCHAR, error VARCHAR,
    created_at TIMESTAMP, cache_write_tokens INTEGER, batch_id VARCHAR
);
CREATE INDEX IF NOT EXISTS llm_call_rows_request_hash ON llm_call_rows (request_hash);
CREATE TABLE IF NOT EXISTS chunk_rows (
    run_id VARCHAR, idx INTEGER, start_char BIGINT, end_char BIGINT, n_tokens INTEGER,
    section VARCHAR, text_sha VARCHAR
);
CREATE TABLE IF NOT EXISTS summary_rows (
    summary_id VARCHAR, run_id VARCHAR, level INTEGER, idx INTEGER, kind VARCHAR, text_sha VARCHAR,
    n_words INTEGER, n_tokens INTEGER, token_limit INTEGER, word_limit INTEGER, attempts INTEGER,
    degraded BOOLEAN, salvaged BOOLEAN, note VARCHAR, first_chunk INTEGER, last_chunk INTEGER,
    request_hash VARCHAR, is_final BOOLEAN, created_at TIMESTAMP
);
"""
# The public views' SELECTs, over row and text tables named by `rows` and `texts`
# (the store's own, or registered Arrow tables: see `_calls_with_texts`).
CALLS_SELECT = """SELECT c.call_id, c.run_id, c.request_hash, c.backend, c.model, c.template, c.template_hash, c.step,
    CAST(q.text AS JSON) AS request, a.text AS response, c.finish_reason, c.input_tokens, c.cached_input_tokens,
    c.output_tokens, c.latency_s, c.cost_usd, c.cached, c.status, c.error, c.created_at, c.cache_write_tokens,
    c.batch_id
FROM {rows} c LEFT JOIN {texts} q ON q.hash = c.request_sha LEFT JOIN {texts} a ON a.hash = c.response_sha"""
CHUNKS_SELECT = """SELECT c.run_id, c.idx, c.start_char, c.end_char, c.n_tokens, c.section, t.text
FROM {rows} c LEFT JOIN {texts} t ON t.hash = c.text_sha"""
SUMMARIES_SELECT = """SELECT s.summary_id, s.run_id, s.level, s.idx, s.kind, t.text, s.n_words, s.n_tokens,
    s.token_limit, s.word_limit, s.attempts, s.degraded, s.salvaged, s.note, s.first_chunk, s.last_chunk,
    s.request_hash, s.is_final, s.created_at
FROM {rows} s LEFT JOIN {texts} t ON t.hash = s.text_sha"""
# public name -> (row table, {text column: its hash column}, the view's SELECT)
ADDRESSED: dict[str, tuple[str, dict[str, str], str]] = {
    "llm_calls": ("llm_call_rows", {"request": "request_sha", "response": "response_sha"}, CALLS_SELECT),
    "chunks": ("chunk_rows", {"text": "text_sha"}, CHUNKS_SELECT),
    "summaries": ("summary_rows", {"text": "text_sha"}, SUMMARIES_SELECT),
}


def _addressed_views(texts: str) -> str:
    return "".join(f"CREATE OR REPLACE VIEW {name} AS\n{select.format(rows=rows, texts=texts)};\n"
                   for name, (rows, _, select) in ADDRESSED.items())


ADDRESSED_VIEWS = _addressed_views("texts")
# On a lake two writers can add one text at once (appends never conflict): the views take one.
LAKE_TEXTS = "(SELECT hash, any_value(text) AS text FROM texts GROUP BY hash)"

# from version -> statements that take a file of that version to the next one;
# they run before SCHEMA, in one transaction with the version update.
MIGRATIONS: dict[int, str] = {
    # 2: llm_calls.cache_write_tokens (prompt-cache writes, priced apart);
    # calls journaled before it wrote none.
    1: """
        ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS cache_write_tokens INTEGER;
        UPDATE llm_calls SET cache_write_tokens = 0 WHERE cache_write_tokens IS NULL;
    """,
    # 3: texts stored once (ADDRESSED_TABLES); the old tables' rows move to the
    # row tables and the tables make way for the views SCHEMA creates. A column
    # llm_calls lacks (batch_id, added by SCHEMA during version 2) is NULL in
    # the rows (INSERT BY NAME); no ALTER here: duckdb 1.5 refuses to commit an
    # ALTER of a table this transaction updated (migration 1's UPDATE).
    2: ADDRESSED_TABLES + """
        INSERT INTO texts SELECT sha256(v), v FROM (
            SELECT CAST(request AS VARCHAR) AS v FROM llm_calls UNION SELECT response FROM llm_calls
            UNION SELECT text FROM chunks UNION SELECT text FROM summaries
        ) WHERE v IS NOT NULL;
        INSERT INTO llm_call_rows BY NAME SELECT * EXCLUDE (request, response),
            sha256(CAST(request AS VARCHAR)) AS request_sha, sha256(response) AS response_sha FROM llm_calls;
        INSERT INTO chunk_rows BY NAME SELECT * EXCLUDE (text), sha256(text) AS text_sha FROM chunks;
        INSERT INTO summary_rows BY NAME SELECT * EXCLUDE (text), sha256(text) AS text_sha FROM summaries;
        DROP INDEX IF EXISTS llm_calls_request_hash;
        DROP TABLE llm_calls;
        DROP TABLE chunks;
        DROP TABLE summaries;
    """,
}

SCHEMA_TABLES = ADDRESSED_TABLES + """
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
-- chunks, summaries and llm_calls: views over the row tables and `texts` (ADDRESSED_TABLES, created below)
-- llm_calls.batch_id: the provider batch that answered a call in batch mode (NULL: a synchronous call)
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
-- the write spool's entries already applied (see `merge_spool`): an entry is applied once, even when the
-- process dies between applying it and emptying the spool
CREATE TABLE IF NOT EXISTS spool_applied (entry_id VARCHAR PRIMARY KEY, applied_at TIMESTAMP);
"""
SCHEMA = SCHEMA_TABLES + ADDRESSED_VIEWS
# The key of each table that has one: what a write that keeps what is there (`ignore_conflicts`)
# compares, on a file (where it is a PRIMARY KEY) and on a lake (where it cannot be).
KEYS = {"meta": "key", "documents": "doc_id", "runs": "run_id", "llm_batches": "batch_id",
        "spool_applied": "entry_id"}


def lake_schema() -> str:
    """SCHEMA as a DuckLake takes it: no PRIMARY KEY, no index, no zstd choice, views that take one text."""
    tables = re.sub(r"(?m)^CREATE INDEX [^;]*;\n", "", SCHEMA_TABLES).replace(" PRIMARY KEY", "")
    return tables.replace("{text_compression}", "") + _addressed_views(LAKE_TEXTS)


LAKE_SCHEMA_HASH = __import__("hashlib").sha256(lake_schema().encode()).hexdigest()[:16]

TABLES = (
    "documents", "runs", "chunks", "compressed_chunks", "summaries", "llm_calls", "scores", "booookscore_annotations",
    "claims", "claim_summaries", "coverage", "llm_batches", "corpora", "corpus_results",
)
ROW_TABLES = tuple(rows for rows, _, _ in ADDRESSED.values())
_LOCKED = re.compile(r"lock|being used by another process", re.IGNORECASE)
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()
# path -> monotonic time until which writes try the file once and go to the
# spool when it is still held, instead of waiting the whole timeout each
_BUSY_UNTIL: dict[str, float] = {}


class StoreError(RuntimeError):
    """A database problem, described in one line for the user."""


class StoreBusy(StoreError):
    """Another process held the file past the timeout (or, on a lake, kept winning the commit)."""


# On a lake: a commit that conflicts with another writer's is tried again this many times
# (jittered backoff, within the store's timeout), then the write is spooled and reported.
LAKE_COMMIT_TRIES = int(os.environ.get("LONGSUM_LAKE_COMMIT_TRIES") or 40)
# What this process's writes did, on a file or a lake: commits, conflicts retried (a lake), writes
# spooled, and each write's latency in seconds (from opening the connection to the commit, retries
# included).
# With LONGSUM_WRITE_STATS=FILE they are written there as JSON when the process ends
# (bench/bench_lake.py reads them).
LAKE_STATS: dict = {"commits": 0, "conflicts": 0, "spooled": 0, "latencies": []}


def _count_commit(started: float) -> None:
    LAKE_STATS["commits"] += 1
    if os.environ.get("LONGSUM_WRITE_STATS"):  # a latency per write: kept only when asked for (a bench)
        LAKE_STATS["latencies"].append(time.monotonic() - started)


def _dump_write_stats() -> None:
    target = os.environ.get("LONGSUM_WRITE_STATS")
    if target and LAKE_STATS["commits"] + LAKE_STATS["spooled"]:
        with open(target, "w", encoding="utf-8") as fh:
            json.dump(LAKE_STATS, fh)


if os.environ.get("LONGSUM_WRITE_STATS"):
    import atexit

    atexit.register(_dump_write_stats)
# (spec, read_only, at, pid) -> an in-memory DuckDB with the lake attached; each unit of work
# takes a cursor of it (attaching costs a catalog connection and the extensions' load).
_LAKES: dict[tuple, object] = {}


def utc(timestamp: float | None = None) -> dt.datetime:
    """Naive UTC datetime (the store's TIMESTAMP columns are UTC)."""
    moment = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.timezone.utc)
    return moment.replace(tzinfo=None)


class Store:
    """The store at a target: a DuckDB file (a Path) or a lake (`ducklake:...`, see `pipelines.lake`).
    `at` (a lake only) reads it as of a snapshot id or a moment: read-only."""

    def __init__(self, path: str | Path | Lake | None = None, timeout_s: float | None = None, read_only: bool = False,
                 at: str | int | At | None = None, data_path: str | Path | None = None):
        target = path if path else default_db()
        try:
            self.lake = target if isinstance(target, Lake) else Lake.parse(target, data_path) if is_lake(target) \
                else None
            self.at = at if isinstance(at, At) or at is None else At.parse(at)
        except LakeError as exc:
            raise StoreError(str(exc)) from None
        if self.at is not None and self.lake is None:
            raise StoreError(f"--at reads a lake as of a snapshot; {target} is a DuckDB file, which keeps none "
                             "(copy it into a lake: summarize db copy)")
        self.path = self.lake if self.lake is not None else Path(target).expanduser()
        env_timeout = os.environ.get("LONGSUM_DB_TIMEOUT")
        self.timeout_s = timeout_s if timeout_s is not None else float(env_timeout or DEFAULT_TIMEOUT_S)
        self.read_only = read_only or self.at is not None
        self._schema_ready = False  # read-only stores check the version too
        self._held = None  # the connection of a `held()` block
        key = self.lake.spec if self.lake is not None else str(self.path.resolve())
        with _PROCESS_LOCKS_GUARD:
            self._lock = _PROCESS_LOCKS.setdefault(key, threading.RLock())

    # -- connections -------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, config: dict | None = None, timeout_s: float | None = None
                ) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        """A connection held only for the block; waits (bounded) for other
        processes. A writing connection first applies what the spool holds."""
        with self._lock:
            if self._held is not None:
                cursor = self._held.cursor()  # a connection of its own to the open database: no file open
                try:
                    yield cursor
                finally:
                    cursor.close()
                return
            if self.lake is not None:
                con, close = self._open_lake(config or {})
                try:
                    if not self._schema_ready:
                        self._prepare_lake_schema(con)
                        self._schema_ready = True
                    if not self.read_only:
                        merge_spool(self, con)
                    yield con
                finally:
                    close()
                return
            con = self._open(config or {}, self.timeout_s if timeout_s is None else timeout_s)
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
                    merge_spool(self, con)
                if hasattr(con, "complete"):  # duckdb 2: no result of the checks left unread (con.sql at once)
                    con.complete()
                yield con
            finally:
                con.close()

    @contextlib.contextmanager
    def held(self) -> Iterator["Store"]:
        """One connection for the whole block instead of one per unit of work
        (each open costs ~25 ms): for a file no other process uses, such as a
        worker's private store. Threads still take turns on it. (A lake's
        connection is kept for the process already: nothing to hold.)"""
        if self.lake is not None:
            yield self
            return
        with self.connect() as con:
            pass  # schema ready, spool merged
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
                        con.execute(_schema_sql(MIGRATIONS[version]))
            con.execute(_schema_sql(SCHEMA))
            _set_meta(con, {"schema_version": SCHEMA_VERSION})
            con.execute("COMMIT")
        except Exception:
            _rollback(con)
            raise

    # -- a lake --------------------------------------------------------------

    def _open_lake(self, config: dict):
        """A cursor of this process's DuckDB with the lake attached, and how to give it back. The
        sandbox (`config` turning external access off) gets a database of its own, closed after."""
        import duckdb

        from pipelines.lake import open_lake

        sandbox = config.get("enable_external_access") is False
        try:
            if sandbox:
                db = open_lake(self.lake, read_only=True, at=self.at, sandbox=True)
                return db, db.close
            key = (self.lake.spec, self.read_only, self.at, os.getpid())
            db = _LAKES.get(key)
            if db is None:
                db = _LAKES[key] = open_lake(self.lake, read_only=self.read_only, at=self.at)
            cursor = db.cursor()
            cursor.execute("USE lake")
            return cursor, cursor.close
        except LakeError as exc:
            raise StoreError(str(exc)) from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the lake {self.lake}: {_first_line(str(exc))}") from None

    def _prepare_lake_schema(self, con) -> None:
        """A lake is created at the current version (the tables with SCHEMA's own statements, made
        for a lake by `lake_schema`) and is left alone while its version and layout match: a
        writer on another machine must not commit schema changes on every open."""
        found = stored_schema_version(con)
        if found is not None and found > int(SCHEMA_VERSION):
            raise StoreError(_newer_schema(self.path, found))
        if found is not None and found < int(SCHEMA_VERSION):
            raise StoreError(f"lake {self.path} has schema version {found}; this longsum writes "
                             f"{SCHEMA_VERSION} and migrates DuckDB files only")
        layout = con.execute("SELECT value FROM meta WHERE key = 'lake_schema'").fetchall() if found else []
        if layout and layout[0][0] == LAKE_SCHEMA_HASH:
            return
        if self.read_only:
            if found is None:
                raise StoreError(f"lake {self.path} has no longsum tables yet (write to it first: "
                                 "summarize ... --db with --data-path)")
            return  # an older layout of the same version: additive, readable as it is
        self._commit_retrying(lambda: (
            con.execute(lake_schema()),
            _set_meta(con, {"schema_version": SCHEMA_VERSION, "lake_schema": LAKE_SCHEMA_HASH}),
        ), con)
        _share_table_folders(con)

    def _commit_retrying(self, work, con=None) -> None:
        """`work` (given a connection, or on `con`) in one lake transaction with a commit message;
        a conflict with another writer's commit is tried again, within LAKE_COMMIT_TRIES and the
        store's timeout; then StoreBusy."""
        import duckdb

        from pipelines.lake import is_conflict

        deadline = time.monotonic() + self.timeout_s
        delay = 0.02
        for attempt in range(1, LAKE_COMMIT_TRIES + 1):
            try:
                if con is not None:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        work()
                        _commit_message(con, [])
                        con.execute("COMMIT")
                    except BaseException:
                        _rollback(con)
                        raise
                else:
                    work()
                return
            except duckdb.Error as exc:
                if not is_conflict(exc):
                    raise
                LAKE_STATS["conflicts"] += 1
                if attempt == LAKE_COMMIT_TRIES or time.monotonic() >= deadline:
                    raise StoreBusy(f"lake {self.path}: {attempt} commits in a row conflicted with other "
                                    f"writers' ({_first_line(str(exc))[:160]})") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

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

    def _open(self, config: dict, timeout_s: float | None = None):
        """A connection to the DuckDB file."""
        import duckdb

        if self.read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path} yet (run summarize first, or pass --db)")
        if not self.read_only:
            self._check_writable()
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only,
                                      config={"default_block_size": str(BLOCK_SIZE), **config})
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCKED.search(message) and "not a valid" not in message:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(
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
    #
    # Every write is a list of operations (`insert_op`, `sql_op`) applied in
    # one transaction by `write`. When another process holds the file past the
    # timeout, the operations go to the spool beside the database instead
    # (`FILE.duckdb.spool.jsonl`, flushed to disk before `write` returns) and
    # the next writing connection, in this process or any other, applies them
    # first, in order. So no writer path loses what it was given to keep (a
    # paid answer, a run row, a failure, a score) to a busy file.

    def write(self, ops: Sequence[dict]) -> bool:
        """Apply the operations in one transaction: True when they are in the
        database, False when the file was held and they were spooled."""
        ops = [op for op in ops if not _empty(op)]
        if not ops:
            return True
        if self.read_only:
            raise StoreError(f"database {self.path} was opened read-only")
        if self.lake is not None:
            return self._write_lake(ops)
        key = str(self.path)
        wait = 0.0 if time.monotonic() < _BUSY_UNTIL.get(key, 0.0) else None
        started = time.monotonic()
        try:
            with self.connect(timeout_s=wait) as con:
                _BUSY_UNTIL.pop(key, None)
                apply_ops(con, ops)
        except StoreBusy:
            # Writes in the next timeout's span try the file once instead of waiting it out again.
            _BUSY_UNTIL[key] = time.monotonic() + self.timeout_s
            LAKE_STATS["spooled"] += 1
            append_spool(self, ops)
            return False
        _count_commit(started)
        return True

    def _write_lake(self, ops: Sequence[dict]) -> bool:
        """Commit the operations to the lake, retrying conflicts (`_commit_retrying`); past the bound
        they go to this machine's spool for the lake, with a line on stderr, and the next writing
        connection applies them: reported, never dropped."""
        import sys

        started = time.monotonic()
        try:
            with self.connect() as con:
                self._commit_retrying(lambda: apply_ops(con, ops, message=True))
            _count_commit(started)
        except StoreBusy as exc:
            LAKE_STATS["spooled"] += 1
            append_spool(self, ops)
            print(f"longsum: {exc}; the write is kept in {spool_path(self)} and applied by the next writer",
                  file=sys.stderr)
            return False
        return True

    def insert_rows(self, table: str, rows: Sequence[dict], con=None, ignore_conflicts: bool = False) -> int:
        """Bulk insert (Arrow) of dict rows whose keys are column names; without
        `con`, through `write` (spooled when the file is held)."""
        if table not in TABLES and not table.startswith(("scores", "booookscore_")):
            raise ValueError(f"unknown table {table}")
        if not rows:
            return 0
        op = insert_op(table, rows, ignore_conflicts=ignore_conflicts)
        if con is not None:
            apply_op(con, op)
        else:
            self.write([op])
        return len(rows)

    def execute(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        """Run SQL; a statement that only writes (INSERT, UPDATE, DELETE) goes
        through `write`, so it is spooled when the file is held (and returns [])."""
        if not self.read_only and _writes_only(sql):
            self.write([sql_op(sql, params)])
            return []
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            return cursor.fetchall() if cursor.description else []

    def query(self, sql: str, params: Sequence | None = None) -> tuple[list[str], list[tuple]]:
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall() if cursor.description else []


def insert_op(table: str, rows: Sequence[dict] | None = None, *, arrow=None, ignore_conflicts: bool = False,
              known_calls: str | None = None) -> dict:
    """An insert for `Store.write`: dict rows, or an Arrow table. `known_calls`
    (llm_calls only) says what becomes of a row whose call_id is stored already:
    'skip' it, or 'replay' it (a new call_id, marked cached)."""
    op = {"insert": table, "ignore_conflicts": ignore_conflicts, "known_calls": known_calls}
    if arrow is not None:
        op["arrow"] = arrow
    else:
        op["rows"] = [_jsonable(r) for r in rows or []]
    return op


def sql_op(sql: str, params: Sequence | None = None) -> dict:
    """A statement for `Store.write` (INSERT, UPDATE or DELETE)."""
    return {"sql": sql, "params": list(params or [])}


def _empty(op: dict) -> bool:
    if "sql" in op:
        return False
    return op["arrow"].num_rows == 0 if "arrow" in op else not op["rows"]


def _share_table_folders(con) -> None:
    """Every table's folder of a local data path, made now with the data path's own permissions.
    DuckDB makes a table's folder (on its first write) with mode 755 whatever the umask, so on a
    data path shared by several users (chmod 2775 for a group, say) the first writer of a table
    would shut the others out of it."""
    from pipelines.lake import data_path_of

    data = data_path_of(con)
    if not data or "://" in data or not os.path.isdir(data):
        return
    mode = os.stat(data).st_mode & 0o7777
    for folder in [Path(data) / "main"] + [Path(data) / "main" / t for t in _base_tables(con, None)]:
        try:
            folder.mkdir(exist_ok=True)
            if folder.stat().st_uid == os.getuid():
                os.chmod(folder, mode)
        except OSError:
            pass  # another user's folder, or a read-only mount: left as it is


def apply_ops(con, ops: Sequence[dict], message: bool = False) -> None:
    """The operations in one transaction; `message` (a lake): with a commit message saying what it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        for op in ops:
            apply_op(con, op)
        if message:
            _commit_message(con, ops)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _rollback(con) -> None:
    """ROLLBACK, when a transaction is still open (a COMMIT that failed has ended it)."""
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _commit_message(con, ops: Sequence[dict]) -> None:
    from pipelines.lake import commit_message

    commit_message(con, ops)


def _set_meta(con, values: dict) -> None:
    """meta rows set (no ON CONFLICT: a lake has no key to conflict on)."""
    for key, value in values.items():
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        con.execute("INSERT INTO meta VALUES (?, ?)", [key, value])


def _first_line(message: str) -> str:
    from pipelines.lake import redact_conninfo

    return redact_conninfo(" ".join(message.strip().splitlines()[0].split()) if message.strip() else message)


def apply_op(con, op: dict) -> None:
    if "sql" in op:
        con.execute(op["sql"], op["params"])
        return
    import pyarrow as pa

    table = op["arrow"] if "arrow" in op else pa.Table.from_pylist(op["rows"])
    write_table(con, op["insert"], table, ignore_conflicts=op.get("ignore_conflicts", False),
                known_calls=op.get("known_calls"))


def write_table(con, name: str, table, *, ignore_conflicts: bool = False, known_calls: str | None = None) -> None:
    """The one writer of every table: Arrow rows into `name`. For `llm_calls`,
    `chunks` and `summaries` the texts go to `texts` (each distinct one once)
    and the rows, naming them by hash, to the row table behind the view.
    `ignore_conflicts`: a row whose key (KEYS) is stored already is kept as it
    is (an anti-join, on a file and on a lake alike)."""
    con.register("_longsum_rows", table)
    try:
        if name not in ADDRESSED:
            key = KEYS.get(name) if ignore_conflicts else None
            where = f' WHERE "{key}" NOT IN (SELECT "{key}" FROM "{name}" WHERE "{key}" IS NOT NULL)' if key else ""
            con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _longsum_rows{where}')
            return
        rows, hashed, _ = ADDRESSED[name]
        columns = list(table.column_names)
        texts = [c for c in hashed if c in columns]
        if texts:
            union = " UNION ALL ".join(f'SELECT CAST("{c}" AS VARCHAR) AS v FROM _longsum_rows' for c in texts)
            con.execute(f"INSERT INTO texts SELECT sha256(v) AS h, v FROM (SELECT DISTINCT v FROM ({union})) "
                        "WHERE v IS NOT NULL AND h NOT IN (SELECT hash FROM texts)")
        select = [f'"{c}"' for c in columns if c not in hashed]
        select += [f'sha256(CAST("{c}" AS VARCHAR)) AS "{hashed[c]}"' for c in texts]
        where = ""
        if name == "llm_calls" and known_calls == "skip":
            where = " WHERE call_id NOT IN (SELECT call_id FROM llm_call_rows WHERE call_id IS NOT NULL)"
        elif name == "llm_calls" and known_calls == "replay":
            known = "call_id IN (SELECT call_id FROM llm_call_rows WHERE call_id IS NOT NULL)"
            select = [
                f"CASE WHEN {known} THEN replace(CAST(gen_random_uuid() AS VARCHAR), '-', '') ELSE call_id END "
                "AS call_id" if c == '"call_id"' else f"cached OR {known} AS cached" if c == '"cached"' else c
                for c in select
            ]
        con.execute(f'INSERT INTO {rows} BY NAME SELECT {", ".join(select)} FROM _longsum_rows{where}')
    finally:
        con.unregister("_longsum_rows")


def _writes_only(sql: str) -> bool:
    """True when every statement of `sql` is an INSERT, UPDATE or DELETE."""
    return _statement_kinds(sql) <= {"INSERT", "UPDATE", "DELETE"} and bool(_statement_kinds(sql))


@functools.lru_cache(maxsize=512)
def _statement_kinds(sql: str) -> frozenset:
    import duckdb

    try:
        return frozenset(s.type.name for s in duckdb.extract_statements(sql))
    except duckdb.Error:
        return frozenset()


def _schema_sql(sql: str) -> str:
    """Schema statements for the DuckDB at hand: zstd for long texts where it compresses strings (1.2 on)."""
    import duckdb

    version = tuple(int(part) for part in re.findall(r"\d+", duckdb.__version__)[:2])
    return sql.replace("{text_compression}", " USING COMPRESSION zstd" if version >= (1, 2) else "")


def stored_schema_version(con) -> int | None:
    """meta.schema_version of an open file; None for a new, empty file. A file
    with longsum's tables but no version row (meta missing or empty) is not
    new: its version is read from its layout (`layout_version`)."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main' "
        "AND table_catalog = current_database()"
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
LAYOUT_MARKERS: dict[int, tuple[str, str]] = {2: ("llm_calls", "cache_write_tokens"), 3: ("llm_call_rows", "request_sha")}


def layout_version(con) -> int | None:
    """The schema version a file's tables show, for a file without a version
    row: None when it has none of longsum's tables (a new file), else the
    newest version whose markers (and every earlier one's) are all present,
    1 at least, so that every migration after it runs."""
    found: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_catalog = current_database()"
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


def spool_path(store: Store) -> Path:
    """The write spool beside the database: what a held file could not take. A lake's is on this
    machine (what kept conflicting), under the default database's folder, named by the lake."""
    if store.lake is not None:
        import hashlib

        from pipelines.paths import default_db_path

        name = hashlib.sha256(store.lake.spec.encode()).hexdigest()[:16]
        folder = default_db_path().parent / "lake-spools"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"lake-{name}.spool.jsonl"
    return store.path.with_name(store.path.name + ".spool.jsonl")


side_journal_path = spool_path  # its name before every writer used it


def _legacy_side_journal_path(store: Store) -> Path:
    """Where longsum before schema 3 kept paid answers for a held file (call records, one per line)."""
    if store.lake is not None:
        return spool_path(store).with_suffix(".calls")  # never written: a lake is newer than schema 3
    return store.path.with_name(store.path.name + ".calls.jsonl")


def _rejected_path(store: Store) -> Path:
    spool = spool_path(store)
    return spool.with_name(spool.name.replace(".spool.jsonl", ".spool.rejected.jsonl"))


@contextlib.contextmanager
def _locked_file(path: Path, mode: str):
    """A spool file under an exclusive flock: appends and the merge that
    empties it never interleave, across threads and processes."""
    import fcntl

    with open(path, mode, encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _encode(value):
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _decode(obj: dict):
    if len(obj) == 1 and "$datetime" in obj:
        return dt.datetime.fromisoformat(obj["$datetime"])
    if len(obj) == 1 and "$date" in obj:
        return dt.date.fromisoformat(obj["$date"])
    return obj


def _spoolable(op: dict) -> dict:
    """An operation as plain data: Arrow rows become dict rows."""
    if "arrow" not in op:
        return op
    return {k: v for k, v in op.items() if k != "arrow"} | {"rows": op["arrow"].to_pylist()}


def append_spool(store: Store, ops: Sequence[dict]) -> None:
    """Keep a write the database could not take (held by another process past
    the timeout): one JSON line, flushed and fsync'd before returning."""
    import uuid

    path = spool_path(store)
    new = not path.exists()
    line = json.dumps({"id": uuid.uuid4().hex, "at": utc().isoformat(), "pid": os.getpid(),
                       "ops": [_spoolable(op) for op in ops]}, ensure_ascii=False, default=_encode)
    with _locked_file(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if new:  # the file's name is durable too
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _entries(text: str) -> tuple[list[dict], list[str]]:
    """The spool's entries, and the lines that are not one (a write torn by a
    crash: its `write` never returned)."""
    entries, torn = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line, object_hook=_decode))
        except ValueError:
            torn.append(line)
    return entries, torn


def read_spool(store: Store) -> list[dict]:
    path = spool_path(store)
    if not path.exists() or path.stat().st_size == 0:
        return []
    with _locked_file(path, "r") as fh:
        return _entries(fh.read())[0]


def merge_spool(store: Store, con) -> int:
    """Apply the spool's entries in order, each once (`spool_applied`), then
    empty it; runs at every writing connection while it has lines. An entry
    the database refuses is kept in `FILE.duckdb.spool.rejected.jsonl`."""
    merged = _merge_legacy_side_journal(store, con)
    path = spool_path(store)
    try:
        if path.stat().st_size == 0:
            return merged
    except FileNotFoundError:
        return merged
    import duckdb

    from pipelines.lake import is_conflict

    lake = store.lake is not None
    with _locked_file(path, "r+") as fh:
        entries, torn = _entries(fh.read())
        ids = [e["id"] for e in entries]
        done = {i for (i,) in con.execute(
            "SELECT entry_id FROM spool_applied WHERE list_contains(?, entry_id)", [ids]).fetchall()}
        for entry in entries:
            if entry["id"] in done:
                continue
            try:
                apply_ops(con, [*entry["ops"], sql_op("INSERT INTO spool_applied VALUES (?, ?)", [entry["id"], utc()])],
                          message=lake)
                merged += 1
            except (duckdb.Error, ValueError, TypeError, KeyError) as exc:
                if lake and is_conflict(exc):
                    return merged  # another writer's commit won: the spool stays, for the next connection
                _reject(store, entry, f"{type(exc).__name__}: {exc}")
        for line in torn:
            _reject(store, {"line": line}, "not a complete spool entry")
        _truncate(fh)  # a process that dies before this leaves entries `spool_applied` knows
    try:
        con.execute("DELETE FROM spool_applied WHERE list_contains(?, entry_id)", [ids]).fetchall()
    except duckdb.Error as exc:
        if not (lake and is_conflict(exc)):
            raise  # on a lake, what stays is folded by vacuum
    return merged


def _truncate(fh) -> None:
    fh.seek(0)
    fh.truncate()
    fh.flush()
    os.fsync(fh.fileno())


def _reject(store: Store, entry: dict, reason: str) -> None:
    import sys

    path = _rejected_path(store)
    with _locked_file(path, "a") as fh:
        fh.write(json.dumps({**entry, "rejected": reason}, ensure_ascii=False, default=_encode) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    print(f"longsum: a spooled write could not be applied to {store.path} ({reason[:200]}); kept in {path}",
          file=sys.stderr)


def _merge_legacy_side_journal(store: Store, con) -> int:
    """Paid answers an older longsum kept in `FILE.duckdb.calls.jsonl`: into llm_calls (those not there yet)."""
    path = _legacy_side_journal_path(store)
    try:
        if path.stat().st_size == 0:
            return 0
    except FileNotFoundError:
        return 0
    with _locked_file(path, "r+") as fh:
        rows = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
        for row in rows:
            row["created_at"] = utc(row["created_at"])
        if rows:
            apply_ops(con, [insert_op("llm_calls", rows, known_calls="skip")])
        _truncate(fh)
    return len(rows)


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
        rows = _calls_with_texts(con, "request_hash = ? AND status = 'ok' AND NOT cached", [request_hash],
                                 "ORDER BY created_at LIMIT 1").to_pylist()
        return _call_record(rows[0]) if rows else None

    def record(self, record) -> None:
        row = dict(record.__dict__)
        row["created_at"] = utc(row["created_at"])
        if not self.store.write([insert_op("llm_calls", [row])]) and record.status == "ok" and not record.cached:
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


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


# -- moving in: a DuckDB file into a lake, and back -------------------------------------------

def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Copy every table of `source` into `target` (a file into a lake, a lake into a file, or alike)
    in one transaction, then compare the counts table by table. `target` must hold no rows yet.
    Returns table -> rows copied."""
    import duckdb

    from pipelines.lake import load_extensions

    with source.connect():
        pass  # the source's version checked (an older file is migrated for reading first)
    skip = {"meta", "spool_applied"}
    with target.connect() as con:
        filled = [t for t in _base_tables(con, None) if t not in skip
                  and con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]]
        if filled:
            raise StoreError(f"{target.path} already holds rows ({', '.join(filled[:4])}): copy into a new "
                             "file or lake")
        if source.lake is not None:
            load_extensions(con, source.lake.catalog)
            where = source.lake.spec
        else:
            if not source.path.exists():
                raise StoreError(f"no database at {source.path}")
            where = str(source.path)
        try:
            con.execute(f"ATTACH '{_sql_quote(where)}' AS longsum_source (READ_ONLY)")
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {source.path} to copy it: {_first_line(str(exc))}") from None
        try:
            tables = [t for t in _base_tables(con, "longsum_source") if t not in skip]
            known = set(_base_tables(con, None))
            missing = [t for t in tables if t not in known]
            if missing:
                raise StoreError(f"{source.path} has tables this longsum does not know: {', '.join(missing)}")

            def copy():
                for table in tables:
                    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM longsum_source.main."{table}"')

            if target.lake is not None:
                target._commit_retrying(copy, con)
            else:
                con.execute("BEGIN TRANSACTION")
                try:
                    copy()
                    con.execute("COMMIT")
                except BaseException:
                    _rollback(con)
                    raise
            counts = {}
            for table in tables:
                here, there = con.execute(f'SELECT (SELECT count(*) FROM "{table}"), '
                                          f'(SELECT count(*) FROM longsum_source.main."{table}")').fetchall()[0]
                if here != there:
                    raise StoreError(f"copy: {table} has {here} rows in {target.path}, {there} in {source.path}")
                counts[table] = here
        finally:
            con.execute("DETACH longsum_source")
    return counts


def _base_tables(con, catalog: str | None) -> list[str]:
    where = "current_database()" if catalog is None else f"'{_sql_quote(catalog)}'"
    return [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        f"AND table_schema = 'main' AND table_catalog = {where} ORDER BY table_name").fetchall()]
