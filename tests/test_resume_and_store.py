"""Resume after SIGKILL, and DuckDB access from several processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import excerpt

from pipelines.store import Store, StoreError


def _count_ok_calls(db_path) -> int:
    store = Store(db_path, timeout_s=30)
    return store.execute("SELECT count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached")[0][0]


@pytest.mark.llm
def test_sigkill_mid_run_then_resume_repeats_no_finished_call(tmp_path, scandal_text, cli_env):
    story = tmp_path / "story.txt"
    story.write_text(excerpt(scandal_text, 600), encoding="utf-8")
    db = tmp_path / "resume.duckdb"
    cmd = ["summarize", str(story), "--chunk-size", "200", "--summary-words", "50", "--context-window", "1024",
           "--db", str(db), "--json", "-q"]
    child = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        if db.exists() and _count_ok_calls(db) >= 2:
            break
        time.sleep(0.5)
    assert child.poll() is None, "the run finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = _count_ok_calls(db)
    assert done_before >= 2

    resumed = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["usage"]["cache_hits"] >= done_before

    store = Store(db)
    repeated = store.execute(
        "SELECT request_hash, count(*) FROM llm_calls WHERE status = 'ok' AND NOT cached GROUP BY 1 HAVING count(*) > 1"
    )
    assert repeated == [], "a finished call was made again"
    statuses = dict(store.execute("SELECT status, count(*) FROM runs GROUP BY 1"))
    assert statuses == {"interrupted": 1, "ok": 1} or statuses == {"interrupted": 1, "degraded": 1}
    (error,) = store.execute("SELECT error FROM runs WHERE status = 'interrupted'")[0]
    assert "interrupted" in error


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def _hold(db, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_second_process_waits_for_the_lock_then_proceeds(tmp_path):
    db = tmp_path / "shared.duckdb"
    holder = _hold(db, 2.0)
    started = time.monotonic()
    store = Store(db, timeout_s=30)
    assert store.execute("SELECT 42")[0][0] == 42
    waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5  # it had to wait for the other process


def test_lock_wait_is_bounded_with_a_clear_message(tmp_path):
    db = tmp_path / "busy.duckdb"
    holder = _hold(db, 20.0)
    try:
        with pytest.raises(StoreError, match=r"in use by another process.*gave up after 1 s"):
            Store(db, timeout_s=1).execute("SELECT 1")
    finally:
        holder.kill()
        holder.wait()


def test_read_only_database_path(unprivileged):
    """Opened by a user who may not write it: writing is refused in one line, reading works."""
    prefix, folder = unprivileged
    db = folder / "ro" / "x.duckdb"
    Store(db).execute("SELECT 1")
    os.chmod(db, 0o444)
    os.chmod(db.parent, 0o555)
    probe = (
        "import sys\n"
        "from pipelines.store import Store, StoreError\n"
        "try:\n"
        f"    Store({str(db)!r}).execute('SELECT 1')\n"
        "    print('WROTE')\n"
        "except StoreError as exc:\n"
        "    print('REFUSED', exc)\n"
        f"print('RUNS', Store({str(db)!r}, read_only=True).execute('SELECT count(*) FROM runs')[0][0])\n"
    )
    out = subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "HOME": str(folder)})
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "not writable" in out.stdout and "RUNS 0" in out.stdout, out.stdout


def test_database_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the database folder"):
        Store(blocker / "sub" / "x.duckdb").execute("SELECT 1")
