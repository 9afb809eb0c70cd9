-- The DuckDB layout of longsum's first released schema (pipelines/store.py SCHEMA at commit a86cd23,
-- schema version 1), kept to test that its files are migrated even without a meta row.
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS documents (
    doc_id VARCHAR PRIMARY KEY, path VARCHAR, title VARCHAR, kind VARCHAR, language VARCHAR,
    encoding VARCHAR, n_chars BIGINT, n_words BIGINT, sections JSON, first_seen TIMESTAMP
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, doc_id VARCHAR, document_path VARCHAR, method VARCHAR,
    backend VARCHAR, model VARCHAR, chunk_size INTEGER, summary_words INTEGER, params JSON,
    status VARCHAR, error VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, seconds DOUBLE,
    n_chunks INTEGER, n_summaries INTEGER, degraded_summaries INTEGER,
    llm_calls INTEGER, cache_hits INTEGER, llm_errors INTEGER, input_tokens BIGINT,
    cached_input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE, llm_seconds DOUBLE,
    final_summary VARCHAR
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
