-- The layout longsum schema version 2 wrote (pipelines/store.py SCHEMA at commit a401e4e),
-- before requests, responses, chunk and summary texts were stored once in `texts` (version 3).
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
INSERT INTO meta VALUES ('schema_version', '2');
