"""Inside a scope (a run), units of work on a DuckDB file share one connection instead of opening
the file for each (pipelines/store/lingering.py), and the file stays as available to other
processes as before: one that waits is let in at the holder's next unit, an idle connection is
closed after a moment, the scope's end closes it, and what was committed survives a SIGKILL of the
holder."""

import os
import subprocess
import sys
import textwrap

import duckdb
import pytest

from pipelines.store import Store
from pipelines.store.lingering import waiting_marker

READ = ("from pipelines.store import Store; import sys; "
        "print(Store(sys.argv[1], read_only=True).execute(\"SELECT count(*) FROM meta WHERE key LIKE 'note-%'\")[0][0])")


def _note(store: Store, n: int) -> None:
    store.execute("INSERT INTO meta VALUES (?, ?)", [f"note-{n}", str(n)])


@pytest.fixture()
def opens(monkeypatch):
    """The files opened by duckdb.connect in this process, in order."""
    seen = []
    real = duckdb.connect

    def counting(database=":memory:", *args, **kwargs):
        seen.append(str(database))
        return real(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting)
    return seen


def _reader(db, timeout_s: float) -> subprocess.Popen:
    """Another process counting the notes; it gives up after `timeout_s` of a held file."""
    return subprocess.Popen([sys.executable, "-c", READ, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "LONGSUM_DB_TIMEOUT": str(timeout_s)})


def test_units_of_work_in_a_scope_open_the_file_once(tmp_path, opens):
    store = Store(tmp_path / "linger.duckdb")
    _note(store, 0)  # created and migrated
    opens.clear()
    with store.lingering():
        for n in range(1, 21):
            _note(store, n)
            assert store.execute("SELECT value FROM meta WHERE key = ?", [f"note-{n}"]) == [(str(n),)]
    assert opens == [str(store.path)]
    for n in range(21, 26):  # outside a scope: a connection per unit, as before
        _note(store, n)
    assert len(opens) == 6


def test_the_end_of_a_scope_releases_the_file_even_when_it_raises(tmp_path):
    store = Store(tmp_path / "linger.duckdb")
    with pytest.raises(ValueError, match="inner"):
        with store.lingering():
            _note(store, 1)
            with store.lingering():  # nested (a run inside a corpus, say): the inner end keeps it
                _note(store, 2)
                raise ValueError("inner")
    # Another configuration of the same file in this process: refused while a connection is open.
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM meta WHERE key LIKE 'note-%'").fetchone() == (2,)


def test_a_process_that_waits_is_let_in_while_the_holder_works_without_pause(tmp_path):
    """The holder writes back to back (never idle) for as long as the reader runs; the reader would
    give up after 20 s if the holder did not let the file go at its next unit."""
    store = Store(tmp_path / "linger.duckdb")
    _note(store, 0)
    written = 0
    with store.lingering():
        _note(store, 1)
        reader = _reader(store.path, timeout_s=20)
        while reader.poll() is None:
            written += 1
            _note(store, 1 + written)
    out, err = reader.communicate()
    assert reader.returncode == 0, err
    assert 2 <= int(out) <= written + 2  # what was committed when it got in
    assert not waiting_marker(store.path).exists()  # the last waiter took its marker away


def test_an_idle_connection_is_closed_for_a_process_that_waits(tmp_path):
    """Kept but unused (a local model's call takes seconds): the file is free after a moment."""
    store = Store(tmp_path / "linger.duckdb")
    with store.lingering():
        _note(store, 1)
        reader = _reader(store.path, timeout_s=20)
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert out.strip() == "1"


def test_a_sigkill_while_the_connection_is_kept_loses_no_committed_write(tmp_path):
    """Killed with its connection kept (idle for less than its linger): every commit is in the file."""
    db = tmp_path / "linger.duckdb"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pipelines.store import Store
        store = Store({str(db)!r})
        with store.lingering():
            for n in range(30):
                store.execute("INSERT INTO meta VALUES (?, ?)", [f"note-{{n}}", str(n)])
            print("written", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "LONGSUM_DB_LINGER_S": "600"})
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.kill()
        writer.wait()
    assert Store(db, read_only=True).execute("SELECT count(*) FROM meta WHERE key LIKE 'note-%'") == [(30,)]
