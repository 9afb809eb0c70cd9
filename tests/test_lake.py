"""The store on a DuckLake whose catalog is the machine's PostgreSQL: several writers in separate
processes, working directories and OS users (as separate machines would be) write one lake at
once and lose nothing; a reader is never refused; the journal replays across machines; every
commit is a snapshot to read as of; a DuckDB file moves into a lake and back; the read-only
sandbox holds; bad input is one line, never a password."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from clitools import TRACEBACK, assert_one_line_error, run
from lakes import as_user, conninfo, create_database, drop_database, other_user, require_lake, user_env

from pipelines.store import Store
from textdata import excerpt

WRITERS = 3
STORIES = 2  # per writer
USERS = ("longsum_lake_a", "longsum_lake_b")  # writers 1 and 2 (writer 0 is this user)
# Every test needs PostgreSQL, which `make test` starts and `make test-fast` does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(books):
    """A folder every user can read: the writers' story files and the lake's data path."""
    require_lake()
    folder = Path(tempfile.mkdtemp(prefix="longsum-lake-", dir="/tmp"))
    folder.chmod(0o755)
    text = (books / "doyle_red_headed_league.txt").read_text(encoding="utf-8")
    for writer in range(WRITERS):
        with (folder / f"stories{writer}.jsonl").open("w", encoding="utf-8") as fh:
            for n in range(STORIES):
                story = excerpt(text[(writer * STORIES + n) * 3000:], 220)
                fh.write(json.dumps({"metadata": {"passage_id": f"w{writer}-{n}"}, "document": story, "questions": [{
                    "question_text": "What is the plot of the story?",
                    "responses": [{"worker_id": "w", "response_text": story[:400]}]}]}) + "\n")
    data = folder / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)  # a data path shared by the writers' users (a group's 2775 in real use)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _eval(stories: Path, server, db: str) -> list[str]:
    return ["summarize", "eval", "squality", str(stories), "--method", "hierarchical", "--model", "openai:fake",
            "--base-url", server.base_url, "--chunk-size", "200", "--summary-words", "40", "--score", "rouge", "-q",
            "--db", db]


# The reader's query: one statement, so one snapshot. Every finished pair (corpus_results, written
# after its scores) has its scores, and a run's scores are all there or none (one commit).
READER_SQL = """SELECT (SELECT count(*) FROM corpus_results),
    (SELECT count(*) FROM corpus_results c WHERE c.status = 'ok'
        AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.run_id = c.run_id)),
    (SELECT count(DISTINCT n) FROM (SELECT count(*) AS n FROM scores GROUP BY run_id))"""
# What each run wrote, comparable between stores: documents by content, values rounded.
CHECKSUM_SQL = """SELECT r.doc_id, r.method, s.metric, s.variant, s.aggregate, round(s.value, 9) AS value
    FROM scores s JOIN runs r USING (run_id) WHERE s.reference_id IS NULL ORDER BY ALL"""


@pytest.fixture(scope="module")
def written(shared, cli_env):
    """WRITERS `summarize eval` processes at once into one new lake (racing to create it), each in
    its own working directory, HOME and (when root) OS user; a reader queries all the while.
    Then the same stories one after another into a DuckDB file, for the checksums."""
    from fake_openai_server import FakeOpenAIServer, concise_answer

    database = create_database()
    lake = conninfo(database)
    users = [None, *(other_user(u) for u in USERS)][:WRITERS]
    env = {**cli_env, "LONGSUM_DATA_PATH": str(shared / "data")}
    observed, refused = [], []
    try:
        with FakeOpenAIServer(answer=concise_answer) as server:
            processes = []
            for writer, user in enumerate(users):
                home = shared / f"machine{writer}"
                machine = user_env(env, user, home)
                command = as_user(user, _eval(shared / f"stories{writer}.jsonl", server, lake), home)
                processes.append(subprocess.Popen(command, cwd=home, env=machine, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True))
            stop = threading.Event()

            def read():
                reader = Store(lake, read_only=True)
                while not stop.is_set():
                    try:
                        observed.append(reader.execute(READER_SQL)[0])
                    except Exception as exc:  # a refused read fails the test below
                        if "not a lake yet" not in str(exc) and "no longsum tables yet" not in str(exc):
                            refused.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)

            thread = threading.Thread(target=read)
            thread.start()
            outputs = [p.communicate(timeout=600) for p in processes]
            stop.set()
            thread.join()
            paid = len(server.requests)
            for process, (out, err) in zip(processes, outputs):
                assert process.returncode == 0, err
                assert "applied by the next writer" not in err, err  # nothing left in a spool
            # The same stories, one after another, into a DuckDB file.
            file_db = shared / "sequential.duckdb"
            for writer in range(WRITERS):
                done = subprocess.run(_eval(shared / f"stories{writer}.jsonl", server, str(file_db)), env=cli_env,
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, done.stderr
        yield {"lake": lake, "database": database, "users": users, "observed": observed, "refused": refused,
               "paid": paid, "file": file_db, "env": env, "port": int(server.base_url.rsplit(":", 1)[1].split("/")[0])}
    finally:
        drop_database(database)


def test_writers_on_separate_machines_lose_nothing_and_a_reader_is_never_refused(written):
    lake = Store(written["lake"], read_only=True)
    runs, distinct_runs, ok = lake.execute("SELECT count(*), count(DISTINCT run_id), count(*) FILTER (status = 'ok') "
                                           "FROM runs")[0]
    file_runs = Store(written["file"], read_only=True).execute("SELECT count(*) FROM runs")[0][0]
    assert runs == distinct_runs == ok == file_runs >= WRITERS * STORIES  # eval adds an extractive baseline
    # Every paid call landed once: as many fresh rows as requests the server answered, no id twice.
    calls, distinct_calls, fresh = lake.execute(
        "SELECT count(*), count(DISTINCT call_id), count(*) FILTER (status = 'ok' AND NOT cached) FROM llm_calls")[0]
    assert calls == distinct_calls and fresh == written["paid"] > 0
    # Every score landed once, with the values a single writer into a DuckDB file gets.
    scores, distinct_scores = lake.execute("SELECT count(*), count(DISTINCT score_id) FROM scores")[0]
    assert scores == distinct_scores > 0
    assert lake.execute(CHECKSUM_SQL) == Store(written["file"], read_only=True).execute(CHECKSUM_SQL)
    # Each writer's commits carry its user (the others', when this test runs as root).
    authors = {a.split("@")[0] for (a,) in lake.execute(
        "SELECT DISTINCT author FROM lake.snapshots() WHERE author IS NOT NULL")}
    assert {u for u in written["users"] if u} <= authors
    # The reader ran during the writes, was never refused, and saw only whole commits.
    assert written["refused"] == []
    assert len(written["observed"]) >= 3
    for finished, without_scores, score_counts in written["observed"]:
        assert without_scores == 0 and score_counts <= 1
    counts = [o[0] for o in written["observed"]]
    assert counts == sorted(counts)


def test_a_re_run_on_another_machine_replays_what_the_first_paid_for(written, shared):
    """Writer 0 paid for its stories; the same stories re-run as another user, in another
    directory with another HOME, cost no call: the lake's journal answers."""
    from fake_openai_server import FakeOpenAIServer, concise_answer

    user = written["users"][-1]
    home = shared / "machine-rerun"
    env = user_env(written["env"], user, home)
    # The same endpoint and answers: the same requests.
    with FakeOpenAIServer(port=written["port"], answer=concise_answer) as server:
        done = subprocess.run(as_user(user, _eval(shared / "stories0.jsonl", server, written["lake"]), home),
                              cwd=home, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert server.requests == []
    lake = Store(written["lake"], read_only=True)
    ((runs, hits, calls),) = lake.execute(
        "SELECT count(*), sum(cache_hits), sum(llm_calls) FROM runs WHERE method = 'hierarchical' "
        "AND started_at >= (SELECT max(started_at) FROM corpora)")
    assert runs == STORIES and hits > 0 and calls == 0


def test_every_commit_is_a_snapshot_to_read_as_of(written, cli_env):
    lake = written["lake"]
    env = {**cli_env}
    listed = run(["snapshots", "--db", lake, "--format", "json", "--limit", "1000"], env)
    assert listed.returncode == 0, listed.stderr
    snapshots = json.loads(listed.stdout)
    store = Store(lake, read_only=True)
    run_ids = [r for (r,) in store.execute("SELECT run_id FROM runs ORDER BY started_at")]
    # The commits say what they were: the command, and the run each wrote.
    assert any("summarize eval squality" in (s["command"] or "") for s in snapshots)
    assert set(run_ids) <= {r for s in snapshots for r in (s["runs"] or "").split()}
    # The first commit that wrote a run's row: as of it, that run alone; as of now, all.
    first = min((s for s in snapshots if "runs" in (s["wrote"] or "").split()), key=lambda s: s["snapshot"])
    at = run(["sql", "SELECT run_id FROM runs", "--db", lake, "--at", str(first["snapshot"]), "--format", "json"], env)
    assert at.returncode == 0, at.stderr
    assert [r["run_id"] for r in json.loads(at.stdout)] == first["runs"].split()
    runs_then = run(["runs", "--db", lake, "--at", str(first["snapshot"]), "--format", "json"], env)
    assert [r["run_id"] for r in json.loads(runs_then.stdout)] == first["runs"].split()
    # A moment: before the lake existed there is no snapshot; now, everything.
    now = run(["sql", "SELECT count(*) AS n FROM runs", "--db", lake, "--at", "2999-01-01 00:00:00",
               "--format", "json"], env)
    assert json.loads(now.stdout) == [{"n": len(run_ids)}]
    report = run(["report", run_ids[0], "--db", lake, "--at", str(max(s["snapshot"] for s in snapshots)), "-o",
                  str(written["file"].with_name("then.html"))], env)
    assert report.returncode == 0, report.stderr
    assert run_ids[0] in written["file"].with_name("then.html").read_text(encoding="utf-8")
    # A DuckDB file keeps no snapshots: one line.
    assert_one_line_error(run(["sql", "SELECT 1", "--db", written["file"], "--at", "1"], env), "keeps none")


def test_a_file_moves_into_a_lake_and_back(written, shared, cli_env):
    database = create_database()
    try:
        lake = conninfo(database)
        into = run(["db", "copy", written["file"], lake, "--data-path", shared / "copy-data"], cli_env)
        assert into.returncode == 0, into.stderr
        back_path = shared / "back.duckdb"
        back = run(["db", "copy", lake, back_path], cli_env)
        assert back.returncode == 0, back.stderr
        source, copy, returned = (Store(t, read_only=True) for t in (written["file"], lake, back_path))
        for table in ("documents", "runs", "llm_calls", "chunks", "summaries", "scores", "texts", "corpora",
                      "corpus_results", "scores_wide"):
            count = f"SELECT count(*) FROM {table}"
            assert source.execute(count) == copy.execute(count) == returned.execute(count), table
        assert source.execute(CHECKSUM_SQL) == copy.execute(CHECKSUM_SQL) == returned.execute(CHECKSUM_SQL)
        queried = run(["sql", "SELECT count(*) AS n FROM scores_wide", "--db", lake, "--format", "json"], cli_env)
        assert queried.returncode == 0 and json.loads(queried.stdout)[0]["n"] > 0, queried.stderr
        # Into a store that holds rows: refused, one line.
        assert_one_line_error(run(["db", "copy", written["file"], lake], cli_env), "already holds rows")
    finally:
        drop_database(database)


@pytest.mark.parametrize("query, why", [
    ("INSERT INTO runs (run_id) VALUES ('x')", "not INSERT"),
    ("SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT pg_read_file(''/etc/hostname'')')",
     "postgres_query"),
    ("SELECT * FROM query('SELECT 1')", "query"),
    ("SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
    ("CALL postgres_execute('__ducklake_metadata_lake', 'DROP TABLE ducklake_snapshot')", "not CALL"),
])
def test_the_sandbox_holds_on_a_lake(written, cli_env, query, why):
    before = Store(written["lake"], read_only=True).execute("SELECT count(*) FROM runs")
    assert_one_line_error(run(["sql", query, "--db", written["lake"]], cli_env), why)
    assert Store(written["lake"], read_only=True).execute("SELECT count(*) FROM runs") == before
    read = run(["sql", "SELECT count(*) AS n FROM runs", "--db", written["lake"], "--format", "json"], cli_env)
    assert read.returncode == 0 and json.loads(read.stdout) == [{"n": before[0][0]}]


def test_every_store_command_works_on_a_lake(written, shared, cli_env):
    lake = written["lake"]
    story = shared / "one-story.txt"
    story.write_text(json.loads((shared / "stories2.jsonl").read_text().splitlines()[0])["document"], encoding="utf-8")
    summarized = run([story, "--method", "extractive", "--summary-words", "40", "--db", lake], cli_env)
    assert summarized.returncode == 0 and summarized.stdout.strip(), summarized.stderr  # `summarize FILE` itself
    run_id = Store(lake, read_only=True).execute("SELECT run_id FROM runs LIMIT 1")[0][0]
    for args in (["runs"], ["show", run_id], ["check"], ["db-path"], ["vacuum"],
                 ["report", "--last", "2", "-o", shared / "lake.html"]):
        done = run([*args, "--db", lake], cli_env)
        assert done.returncode == 0, (args, done.stderr)
        assert TRACEBACK not in done.stderr
    # The same tables and columns as a DuckDB file.
    columns = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
               "WHERE table_catalog = current_database() AND table_name NOT IN ('meta') ORDER BY ALL")
    assert Store(lake, read_only=True).execute(columns) == Store(written["file"], read_only=True).execute(columns)


def test_a_password_never_reaches_a_row_a_message_or_a_snapshot(shared, cli_env):
    """Given in the conninfo, the password is taken out at once (into PGPASSWORD for libpq):
    the peer login here ignores it, so the run works and nothing may show it."""
    require_lake()
    database = create_database()
    secret = "hunter2-lake-secret"
    try:
        lake = f"{conninfo(database)} password={secret}"
        done = run(["eval", "squality", shared / "stories0.jsonl", "--method", "extractive", "--score", "rouge", "-q",
                    "--db", lake, "--data-path", shared / "pw-data"], cli_env)
        assert done.returncode == 0, done.stderr
        bad = run(["sql", "SELECT nope", "--db", lake], cli_env)
        store = Store(conninfo(database), read_only=True)
        stored = store.execute(
            "SELECT string_agg(CAST(s AS VARCHAR), ' ') FROM (SELECT * FROM lake.snapshots()) s")[0][0] + " ".join(
            str(store.execute(f"SELECT string_agg(CAST(t AS VARCHAR), ' ') FROM {t} t")[0][0])
            for t in ("runs", "corpora", "corpus_results", "documents", "meta"))
        for text in (done.stdout, done.stderr, bad.stderr, stored):
            assert secret not in text
        assert "password=***" in stored  # the command in the commit message, redacted
        # What a flow, a task or a deployment is handed: the spec, without the password.
        from pipelines.lake import Lake

        before = os.environ.get("PGPASSWORD")
        try:
            handed = Lake.parse(lake).spec
            assert secret not in handed and os.environ.get("PGPASSWORD") == secret
        finally:
            os.environ.pop("PGPASSWORD", None) if before is None else os.environ.update(PGPASSWORD=before)
    finally:
        drop_database(database)


@pytest.mark.parametrize("target, fragment", [
    ("ducklake:postgres:dbname=longsum_no_such_database host=/var/run/postgresql", "cannot reach"),
    ("ducklake:postgres:dbname=x host=/nonexistent/socket password=s3cret-never-shown", "cannot reach"),
    ("ducklake:postgres:dbname=x nonsense_option=1 host=/var/run/postgresql", "conninfo"),
    ("ducklake:mysql:db", "ducklake:postgres:<libpq conninfo>"),
])
def test_a_bad_lake_is_one_line(target, fragment, cli_env):
    require_lake()
    result = run(["runs", "--db", target], cli_env)
    line = assert_one_line_error(result, fragment)
    assert "s3cret" not in result.stderr + result.stdout, line


def test_a_new_lake_needs_its_data_path(cli_env):
    require_lake()
    database = create_database()
    try:
        result = run(["sql", "SELECT 1", "--unsafe", "--db", conninfo(database)], cli_env)
        assert_one_line_error(result, "--data-path")
    finally:
        drop_database(database)


def test_a_writer_after_a_creator_stopped_before_its_folders_shares_them(shared, cli_env):
    """The lake's creator committed its tables and stopped before it made their folders (killed,
    or only slower than another writer: the race a CI run met). The next writer, this user, makes
    every table's folder with the shared data path's mode, and gives it to the one DuckDB made as
    755, so a writer that is another OS user can still write every table."""
    require_lake()
    database = create_database()
    data = shared / "regrown-data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    lake = conninfo(database)
    try:
        Store(lake, data_path=data).execute("SELECT 1")  # creates the lake
        shutil.rmtree(data / "main", ignore_errors=True)  # as if its creator had stopped right after its commit
        (data / "main").mkdir(mode=0o755)  # and DuckDB had made this user's first folder, as it does
        for writer, user in enumerate([None, other_user(USERS[0])]):
            command = ["summarize", "eval", "squality", str(shared / f"stories{writer}.jsonl"), "--method",
                       "extractive", "--score", "rouge", "-q", "--db", lake]
            home = shared / f"regrown{writer}"
            env = user_env(cli_env, user, home)
            done = subprocess.run(as_user(user, command, home), cwd=home, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stderr
            folders = [data / "main", *(p for p in (data / "main").iterdir() if p.is_dir())]
            assert {f.stat().st_mode & 0o7777 for f in folders} == {0o777}, folders
            assert len(folders) > 10, folders  # main and every table's
        assert Store(lake, read_only=True).execute("SELECT count(DISTINCT doc_id) FROM runs")[0][0] == 2 * STORIES
    finally:
        drop_database(database)


def test_two_writers_that_meet_on_one_text_are_read_once(tmp_path, cli_env):
    """Appends never conflict in a lake: two commits may both add one text (or document). The
    views and `summarize runs` take one; vacuum folds the rest."""
    require_lake()
    from pipelines.store import insert_op, vacuum, write_table

    database = create_database()
    try:
        _meet(Store(conninfo(database), data_path=tmp_path / "data"), insert_op, vacuum, write_table, cli_env)
    finally:
        drop_database(database)


def _meet(store, insert_op, vacuum, write_table, cli_env):
    store.insert_rows("runs", [{"run_id": "r1", "doc_id": "d1", "status": "ok"}])
    with store.connect() as first, store.connect() as second:
        for con, call in ((first, "c1"), (second, "c2")):  # both transactions open before either commits
            con.execute("BEGIN TRANSACTION")
            op = insert_op("llm_calls", [{"call_id": call, "run_id": "r1", "request_hash": "h", "request": '{"q": 1}',
                                          "response": "the same answer", "status": "ok", "cached": False}])
            import pyarrow as pa
            write_table(con, "llm_calls", pa.Table.from_pylist(op["rows"]))
            write_table(con, "documents", pa.Table.from_pylist([{"doc_id": "d1", "title": "twice"}]),
                        ignore_conflicts=True)
        first.execute("COMMIT")
        second.execute("COMMIT")
    assert store.execute("SELECT count(*) FROM texts WHERE text = 'the same answer'") == [(2,)]
    assert store.execute("SELECT count(*) FROM documents") == [(2,)]
    assert sorted(store.execute("SELECT call_id, response FROM llm_calls")) == [
        ("c1", "the same answer"), ("c2", "the same answer")]
    listed = json.loads(run(["runs", "--db", str(store.path), "--format", "json"], cli_env).stdout)
    assert [(r["run_id"], r["document"]) for r in listed] == [("r1", "twice")]
    vacuum(store)
    assert store.execute("SELECT count(*) FROM texts WHERE text = 'the same answer'") == [(1,)]
    assert store.execute("SELECT count(*) FROM documents") == [(1,)]


def test_a_password_in_a_uri_query_leaves_the_other_parameters(monkeypatch):
    from pipelines.lake import Lake

    monkeypatch.delenv("PGPASSWORD", raising=False)
    lake = Lake.parse("ducklake:postgres:postgresql://u@h/db?password=xx&sslmode=require")
    assert lake.spec == "ducklake:postgres:postgresql://u@h/db?sslmode=require"
    assert os.environ["PGPASSWORD"] == "xx"


def test_a_corpus_flow_run_as_another_user_in_its_folder_writes_the_lake_and_score_adds_to_it(
        written, shared, cli_env, prefect_harness):
    """The evaluate_corpus flow (`summarize corpus FOLDER`, its tasks in the flow's process) started
    as another OS user, in its own working directory and Prefect home, against the session's
    Prefect API: its runs land in the lake, each commit signed by that user; then `summarize
    score` (this user, another process) adds ROUGE to one of them."""
    from fake_openai_server import FakeOpenAIServer
    from prefect.settings import PREFECT_API_URL

    lake, user = written["lake"], written["users"][1]
    corpus = shared / "flow-corpus"
    corpus.mkdir(mode=0o755, exist_ok=True)
    text = (shared / "stories0.jsonl").read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(text):
        (corpus / f"story{n}.txt").write_text(json.loads(line)["document"], encoding="utf-8")
    home = shared / "flow-machine"
    env = user_env({**written["env"], "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_API_KEY": "sk-test"},
                   user, home)
    reader = Store(lake, read_only=True)
    runs_before = {r for (r,) in reader.execute("SELECT run_id FROM runs")}
    with FakeOpenAIServer() as server:
        command = as_user(user, ["summarize", "corpus", str(corpus), "--method", "hierarchical", "--model",
                                 "openai:fake", "--base-url", server.base_url, "--chunk-size", "200",
                                 "--summary-words", "40", "--db", lake], home)
        done = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    new = reader.execute("SELECT run_id, status FROM runs")
    new = {r: status for r, status in new if r not in runs_before}
    assert len(new) == len(text) and set(new.values()) == {"ok"}, new
    authors = {a for (a,) in reader.execute(
        "SELECT DISTINCT author FROM lake.snapshots() WHERE list_contains(CAST(json_extract_string("
        "commit_extra_info, '$.runs') AS VARCHAR[]), ?)", [next(iter(new))])}
    assert authors and all(a.startswith(f"{user or os.environ.get('USER', 'root')}@") for a in authors), authors

    reference = shared / "flow-reference.txt"
    reference.write_text(json.loads(text[0])["document"][:400], encoding="utf-8")
    run_id = next(iter(new))
    scored = run(["score", run_id, "--reference", reference, "--score", "rouge", "--db", lake], cli_env)
    assert scored.returncode == 0, scored.stderr
    assert reader.execute("SELECT count(*) FROM scores WHERE run_id = ? AND metric LIKE 'rouge%'", [run_id])[0][0] > 0


def test_a_flow_reads_the_lakes_password_from_a_prefect_secret_block(shared, prefect_harness, monkeypatch):
    """A catalog that asks for a password (PostgreSQL over TCP, scram-sha-256): the flow given only
    the name of a Prefect Secret block logs in with the block's value; without it the run is
    refused in one line. The password is in no parameter, row or snapshot."""
    import uuid

    from prefect.blocks.system import Secret

    from flows.evaluate_flow import evaluate_corpus

    require_lake()
    database, role, password = create_database(), "longsum_lake_pw", f"pw-{uuid.uuid4().hex}"
    made = subprocess.run(["su", "postgres", "-c", f"psql -qc \"DROP ROLE IF EXISTS {role}\" -c \"CREATE ROLE {role} "
                           f"LOGIN SUPERUSER PASSWORD '{password}'\""], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    corpus = shared / "secret-corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "story.txt").write_text(json.loads((shared / "stories1.jsonl").read_text().splitlines()[0])["document"],
                                      encoding="utf-8")
    Secret(value=password).save("longsum-lake-password", overwrite=True)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("LONGSUM_DATA_PATH", str(shared / "secret-data"))
    lake = f"ducklake:postgres:dbname={database} host=127.0.0.1 user={role}"
    try:
        with pytest.raises(Exception) as refused:
            evaluate_corpus(str(corpus), configs=[{"method": "extractive"}], db=lake, report=str(shared / "r.html"))
        assert "password" in str(refused.value).lower() and len(str(refused.value).splitlines()) == 1
        evaluate_corpus(str(corpus), configs=[{"method": "extractive"}], db=lake, report=str(shared / "r.html"),
                        db_password_secret="longsum-lake-password")
        store = Store(lake, read_only=True)
        assert store.execute("SELECT count(*) FROM runs WHERE status = 'ok'") == [(1,)]
        stored = " ".join(str(store.execute(f"SELECT string_agg(CAST(t AS VARCHAR), ' ') FROM {t} t")[0][0])
                          for t in ("runs", "corpora", "lake.snapshots()"))
        assert password not in stored
    finally:
        drop_database(database)
        subprocess.run(["su", "postgres", "-c", f"psql -qc \"DROP ROLE IF EXISTS {role}\""], capture_output=True)
