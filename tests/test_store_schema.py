"""The store's schema version is read (older files are migrated, newer ones
refused), and an answer that was paid for survives a database held by another
process."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from clitools import assert_one_line_error, run
from fake_openai_server import FakeOpenAIServer

from pipelines.llm.openai_backend import OpenAIBackend
from pipelines.llm.recording import RecordingLLM
from pipelines.store import SCHEMA_VERSION, DuckDBJournal, Store, StoreError, side_journal_path
from prompts import RenderedPrompt

V1_SCHEMA = Path(__file__).parent / "data" / "store_schema_v1.sql"


def prompt(text: str) -> RenderedPrompt:
    return RenderedPrompt("test", "0" * 64, ({"role": "user", "content": text},), 0)


def v1_database(path: Path) -> Path:
    """A file as longsum schema version 1 wrote it, with one journaled call."""
    con = duckdb.connect(str(path))
    con.execute(V1_SCHEMA.read_text())
    con.execute(
        "INSERT INTO llm_calls (call_id, request_hash, backend, model, status, cached, response, finish_reason, "
        "input_tokens, cached_input_tokens, output_tokens, latency_s, created_at) "
        "VALUES ('old', 'h-old', 'openai', 'gpt-4o-mini', 'ok', false, 'an old answer', 'stop', 10, 0, 3, 0.1, now())"
    )
    con.close()
    return path


def test_a_version_1_database_is_migrated(tmp_path):
    db = v1_database(tmp_path / "v1.duckdb")
    store = Store(db)
    assert store.execute("SELECT value FROM meta WHERE key = 'schema_version'") == [(SCHEMA_VERSION,)]
    assert store.execute("SELECT call_id, cache_write_tokens FROM llm_calls") == [("old", 0)]
    hit = DuckDBJournal(store).lookup("h-old")
    assert hit is not None and hit.response == "an old answer" and hit.cache_write_tokens == 0


def test_a_version_1_database_opened_for_reading_is_migrated_first(tmp_path, cli_env):
    db = v1_database(tmp_path / "v1.duckdb")
    result = run(["sql", "SELECT value FROM meta WHERE key = 'schema_version'", "--db", db], cli_env)
    assert result.returncode == 0, result.stderr
    assert SCHEMA_VERSION in result.stdout


FIRST_SCHEMA = Path(__file__).parent / "data" / "store_schema_first.sql"


def first_schema_database(path: Path, meta: str) -> Path:
    """A file with the tables of longsum's first released schema (commit a86cd23)
    and no version row: `meta` 'empty' (the process died between the tables and
    the row, which that version wrote apart) or 'dropped' (no meta table at all)."""
    con = duckdb.connect(str(path))
    con.execute(FIRST_SCHEMA.read_text())
    if meta == "dropped":
        con.execute("DROP TABLE meta")
    con.execute(
        "INSERT INTO llm_calls (call_id, request_hash, backend, model, status, cached, response, finish_reason, "
        "input_tokens, cached_input_tokens, output_tokens, latency_s, created_at) "
        "VALUES ('first', 'h-first', 'openai', 'gpt-4o-mini', 'ok', false, 'a first answer', 'stop', 10, 0, 3, 0.1, "
        "now())"
    )
    con.execute("INSERT INTO runs (run_id, status, final_summary) VALUES ('r-first', 'ok', 'kept')")
    con.close()
    return path


@pytest.mark.parametrize("meta", ["empty", "dropped"])
@pytest.mark.parametrize("read_only", [False, True])
def test_a_first_schema_file_without_a_version_row_is_migrated(tmp_path, meta, read_only):
    """Not mistaken for a new file: its version is read from its tables, and the
    migrations after it run (cache_write_tokens backfilled), its rows kept."""
    from pipelines.store import layout_version, stored_schema_version

    db = first_schema_database(tmp_path / "first.duckdb", meta)
    con = duckdb.connect(str(db), read_only=True)
    assert stored_schema_version(con) == layout_version(con) == 1
    con.close()
    store = Store(db, read_only=read_only)
    assert store.execute("SELECT call_id, cache_write_tokens FROM llm_calls") == [("first", 0)]
    assert store.execute("SELECT value FROM meta WHERE key = 'schema_version'") == [(SCHEMA_VERSION,)]
    assert store.execute("SELECT run_id, final_summary, compression FROM runs") == [("r-first", "kept", None)]
    hit = DuckDBJournal(Store(db)).lookup("h-first")
    assert hit is not None and hit.response == "a first answer" and hit.cache_write_tokens == 0


def test_a_current_file_without_a_version_row_is_read_as_current(tmp_path):
    """The layout decides in both directions: a current file that lost its meta
    row is not migrated from version 1 (and a file of no tables is new)."""
    from pipelines.store import layout_version

    db = tmp_path / "current.duckdb"
    store = Store(db)
    store.insert_rows("llm_calls", [{"call_id": "now", "cache_write_tokens": None}])  # a view: rows go in through the store
    store.execute("DELETE FROM meta")
    con = duckdb.connect(str(db), read_only=True)
    assert layout_version(con) == int(SCHEMA_VERSION)
    con.close()
    assert Store(db).execute("SELECT call_id, cache_write_tokens FROM llm_calls") == [("now", None)]
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    assert layout_version(con) is None
    con.close()


def test_a_newer_database_is_refused(tmp_path, cli_env):
    db = tmp_path / "future.duckdb"
    Store(db).execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for read_only in (False, True):
        with pytest.raises(StoreError, match="schema version 99, newer than"):
            Store(db, read_only=read_only).execute("SELECT 1")
    assert Store(db, read_only=True).path.exists()
    for args in (["runs"], ["sql", "SELECT 1"]):
        assert_one_line_error(run([*args, "--db", db], cli_env), "newer than this longsum")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("99",)  # untouched
    con.close()


@pytest.mark.slow
def test_paid_answers_survive_a_database_held_by_a_long_reader(tmp_path):
    """A reader (another process, read-only) holds the file while calls return:
    the answers go to the side journal, the run goes on, nothing is asked twice,
    and the next writing connection merges everything into llm_calls."""
    db = tmp_path / "held.duckdb"
    Store(db).execute("SELECT 1")  # create it
    texts = [f"Summarize in at most 12 words.\n<text>\nPart {i}: the cat sat on mat {i}.\n</text>" for i in range(3)]
    with FakeOpenAIServer() as server:
        reader = subprocess.Popen(
            [sys.executable, "-c",
             "import duckdb, sys\n"
             f"con = duckdb.connect({str(db)!r}, read_only=True)\n"
             "print('holding', flush=True)\n"
             "sys.stdin.read()\n"
             "con.close()\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert reader.stdout.readline().strip() == "holding"
            store = Store(db, timeout_s=0.2)
            with pytest.raises(StoreError):  # the file really is held
                store.execute("SELECT 1")
            llm = RecordingLLM(OpenAIBackend("served", base_url=server.base_url), DuckDBJournal(store))
            answers = [llm.complete(prompt(t), 30) for t in texts]
            again = llm.complete(prompt(texts[0]), 30)
            assert len(server.requests) == 3  # the repeated prompt was replayed, not asked again
            assert again.cached and again.text == answers[0].text
            assert side_journal_path(store).stat().st_size > 0
        finally:
            reader.stdin.close()
            reader.wait(timeout=60)
        after = Store(db)
        rows = after.execute("SELECT response, cached FROM llm_calls WHERE status = 'ok' ORDER BY created_at")
        assert sorted(r[0] for r in rows if not r[1]) == sorted(a.text for a in answers)
        assert [r[0] for r in rows if r[1]] == [answers[0].text]
        assert side_journal_path(store).stat().st_size == 0
        # a later run finds them in the database
        llm = RecordingLLM(OpenAIBackend("served", base_url=server.base_url), DuckDBJournal(Store(db)))
        assert all(llm.complete(prompt(t), 30).cached for t in texts)
        assert len(server.requests) == 3


def test_a_copy_that_cannot_be_made_is_one_line_and_leaves_the_target_empty(tmp_path, cli_env):
    """`summarize db copy` from a file whose chunk_rows hold a token count that is not a
    number (a file edited by hand): one line naming both files, and nothing copied."""
    source, target = tmp_path / "edited.duckdb", tmp_path / "copy.duckdb"
    Store(source).execute("SELECT 1")
    con = duckdb.connect(str(source))
    con.execute("ALTER TABLE chunk_rows ALTER n_tokens TYPE VARCHAR")
    con.execute("INSERT INTO runs (run_id, doc_id, status) VALUES ('r1', 'd1', 'ok')")
    con.execute("INSERT INTO chunk_rows (run_id, idx, n_tokens) VALUES ('r1', 0, 'many')")
    con.close()
    assert_one_line_error(run(["db", "copy", source, target], cli_env), "cannot copy", "edited.duckdb")
    assert Store(target, read_only=True).execute("SELECT count(*) FROM runs") == [(0,)]
