-- The DuckDB layout of longsum schema version 1 (pipelines/store.py at commit 74b52be),
-- kept to test that files written by it are migrated.
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
    arg_max(config->>'model', created_at) FILTER (WHERE metric = 'bertscore') AS bertscore_model,
    arg_max(config->>'model', created_at) FILTER (WHERE metric = 'booookscore') AS booookscore_model,
    max(created_at) AS scored_at
FROM latest
GROUP BY run_id;
INSERT INTO meta VALUES ('schema_version', '1');
