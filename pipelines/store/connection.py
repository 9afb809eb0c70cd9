"""The Store: a DuckDB file or a lake, opened for one unit of work at a time (a bounded
wait for a file another process holds, a retried commit on a lake), its schema made ready
on first use, and the writes through it (one transaction, or the spool when held)."""

from __future__ import annotations

import contextlib
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
from pipelines.secrets import first_line
import pipelines.store.lingering as lingering
from pipelines.store.errors import StoreBusy, StoreError
from pipelines.store.schema import (
    LAKE_SCHEMA_HASH,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    _base_tables,
    _newer_schema,
    _schema_sql,
    _set_meta,
    lake_schema,
    stored_schema_version,
)
from pipelines.store.spool import append_spool, merge_spool, spool_path
from pipelines.store.writes import (
    _commit_message,
    _empty,
    _rollback,
    _writes_only,
    apply_op,
    apply_ops,
    insert_op,
    sql_op,
)


DEFAULT_TIMEOUT_S = 60.0
# New files get 64 KiB blocks, not DuckDB's 256 KiB: a run appends a few rows to many small
# tables and each checkpoint moves every changed block, so a file of 256 KiB blocks grew by
# whole blocks from re-run to re-run (the demo story: 5.3 MB, up to 1.15x after identical
# re-runs; with 64 KiB 2.6 MB, 1.00x; bench/bench_store_size.py). 16 KiB gave a smaller
# demo file but a compacted copy that grew 1.21x on a 466-call run. Older files keep theirs.
BLOCK_SIZE = 65_536
_LOCKED = re.compile(r"lock|being used by another process", re.IGNORECASE)
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()
# path -> monotonic time until which writes try the file once and go to the
# spool when it is still held, instead of waiting the whole timeout each
_BUSY_UNTIL: dict[str, float] = {}


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
        self._key = self.lake.spec if self.lake is not None else str(self.path.resolve())
        with _PROCESS_LOCKS_GUARD:
            self._lock = _PROCESS_LOCKS.setdefault(self._key, threading.RLock())

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
            con = None if config else lingering.take(self._key, self.read_only, self.path)
            if con is None:
                if config:  # DuckDB opens a file once per process with one configuration
                    lingering.close_kept(self._key)
                con = self._open(config or {}, self.timeout_s if timeout_s is None else timeout_s)
            unit = None
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
                unit = con.cursor()  # a unit's own state (registrations, transaction) ends with it
                yield unit
            except BaseException:
                if unit is not None:
                    unit.close()
                con.close()
                raise
            unit.close()
            if config:
                con.close()
                return
            if not self.read_only:
                # What the unit wrote goes from the WAL into the file now, as a close would have
                # done: one checkpoint of the whole run rewrote more of each table, and identical
                # re-runs of the demo story left the file up to 1.3x larger than these.
                try:
                    con.execute("CHECKPOINT")
                except BaseException:
                    con.close()
                    raise
            lingering.give_back(self._key, con, self.read_only, self.path)

    def lingering(self):
        """A scope (one run, say) in which units of work on a DuckDB file share one connection while
        no other process waits for the file (see `pipelines.store.lingering`). A lake's connection
        is kept for the process already."""
        return contextlib.nullcontext() if self.lake is not None else lingering.scope(self._key)

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
            raise StoreError(f"cannot open the lake {self.lake}: {first_line(str(exc))}") from None

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
        if not self.read_only:
            _share_table_folders(con)
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
                                    f"writers' ({first_line(str(exc))[:160]})") from None
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
        if self.read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path} yet (run summarize first, or pass --db)")
        if not self.read_only:
            self._check_writable()
            if not self.path.exists():
                _create_whole(self.path)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        waiting = lingering.Waiting(self.path)
        try:
            return self._connect_waiting(config, deadline, waiting)
        finally:
            waiting.done()

    def _connect_waiting(self, config: dict, deadline: float, waiting: "lingering.Waiting"):
        import duckdb

        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only,
                                      config={"default_block_size": str(BLOCK_SIZE), **config})
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCKED.search(message) and "not a valid" not in message:
                    waiting.announce()  # a holder that keeps its connection between units lets it go
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


def _beside(path: Path) -> Path:
    """A hidden name beside `path`, this thread's own, to make something whole before it goes into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")


def _create_whole(path: Path) -> None:
    """An empty DuckDB file at `path`, put there whole. DuckDB creates a file and only then
    locks it and writes its header, so a second process opening the path in between locked
    the empty file and refused it as "not a valid DuckDB database" (two runs starting on one
    new --db at once). Made beside it and hard-linked into place (which never overwrites),
    the path holds nothing or a whole database; a process that loses the race keeps the
    winner's file."""
    import duckdb

    spare = _beside(path)
    try:
        duckdb.connect(str(spare), config={"default_block_size": str(BLOCK_SIZE)}).close()
        os.link(spare, path)
    except FileExistsError:
        pass  # another process made it first, whole too
    except (OSError, duckdb.Error):
        pass  # no hard links here (or no room for the spare): DuckDB creates the file as before
    finally:
        for leftover in (spare, spare.with_name(spare.name + ".wal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _share_table_folders(con) -> None:
    """Every table's folder of a local data path, made with the data path's own permissions before
    this writer writes. DuckDB makes a table's folder (on its first write) with mode 755 whatever
    the umask, so on a data path shared by several users (chmod 2775 for a group, say) the first
    writer of a table would shut the others out of it. Every writer does this, not only the one
    that created the lake: another writer may write between that one's commit and its folders
    (or after it was killed in between)."""
    from pipelines.lake import data_path_of

    data = data_path_of(con)
    if not data or "://" in data or not os.path.isdir(data):
        return
    mode = os.stat(data).st_mode & 0o7777
    tables = sorted(set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", lake_schema())) | set(_base_tables(con, None)))
    for folder in [Path(data) / "main"] + [Path(data) / "main" / t for t in tables]:
        _make_folder_with_mode(folder, mode)


def _make_folder_with_mode(folder: Path, mode: int) -> None:
    """`folder` with `mode`, never seen with a narrower one: made beside its name, given the mode,
    then renamed into place. Made and then chmod-ed in place, another user's writer could find it
    with the umask's mode in between and fail to make its table's folder inside. A folder of this
    user's that DuckDB made (before this writer, or by an older longsum) is given the mode too."""
    if folder.is_dir():
        with contextlib.suppress(OSError):
            if folder.stat().st_uid == os.getuid():
                os.chmod(folder, mode)
        return
    spare = _beside(folder)
    try:
        spare.mkdir()
        os.chmod(spare, mode)
        os.rename(spare, folder)  # onto another writer's empty folder: it is replaced by an equal one
    except OSError:
        pass  # another writer's folder, already filled; or a read-only mount: left as it is
    finally:
        with contextlib.suppress(OSError):
            spare.rmdir()


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
