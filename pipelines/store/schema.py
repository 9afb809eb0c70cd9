"""The store's layout: its tables and views (on a file and, made for one, on a lake), the
schema version, the migrations that bring an older file up to it, and the checks that
refuse a newer one; what a database's tables are."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

from pipelines.store.errors import StoreError


# The layout's version, kept in meta.schema_version. Additive changes (a new
# table or column, written with IF NOT EXISTS in SCHEMA below) need no new
# version: SCHEMA runs on every open and brings any older file up to date.
# A change SCHEMA cannot express (a backfill, a rename, a changed meaning)
# bumps the version and adds a step to MIGRATIONS. A file of a newer version
# than this code knows is refused, never written.
SCHEMA_VERSION = "3"

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
-- citations (pipelines/citations.py): one row per summary sentence and passage it rests on;
-- method model | aligned | traced | unsupported (no chunk: nothing the summary was given supports it);
-- dropped: passage ids the model named that its prompt did not give (on the sentence's first row)
CREATE TABLE IF NOT EXISTS citations (
    run_id VARCHAR, summary_id VARCHAR, sentence_idx INTEGER, sentence VARCHAR, chunk_idx INTEGER,
    start_char BIGINT, end_char BIGINT, page INTEGER, last_page INTEGER, section VARCHAR, first_line INTEGER,
    last_line INTEGER,
    method VARCHAR, score DOUBLE, dropped INTEGER, created_at TIMESTAMP
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
    "claims", "claim_summaries", "coverage", "citations", "llm_batches", "corpora", "corpus_results",
)
ROW_TABLES = tuple(rows for rows, _, _ in ADDRESSED.values())


def utc(timestamp: float | None = None) -> dt.datetime:
    """Naive UTC datetime (the store's TIMESTAMP columns are UTC)."""
    moment = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.timezone.utc)
    return moment.replace(tzinfo=None)


def _set_meta(con, values: dict) -> None:
    """meta rows set (no ON CONFLICT: a lake has no key to conflict on)."""
    for key, value in values.items():
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        con.execute("INSERT INTO meta VALUES (?, ?)", [key, value])


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


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


def _base_tables(con, catalog: str | None) -> list[str]:
    where = "current_database()" if catalog is None else f"'{_sql_quote(catalog)}'"
    return [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        f"AND table_schema = 'main' AND table_catalog = {where} ORDER BY table_name").fetchall()]
