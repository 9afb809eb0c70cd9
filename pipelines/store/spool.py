"""The write spool (the side journal): what a held file, or a lake that kept conflicting,
could not take is kept beside it, one fsync'd JSON line per write, and the next writing
connection applies it, each entry once. (`Store` in the annotations is
`pipelines.store.connection.Store`, which calls this module: named, not imported.)"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Sequence

from pipelines.store.schema import utc
from pipelines.store.writes import apply_ops, insert_op, sql_op


def spool_path(store: "Store") -> Path:  # noqa: F821
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


def _legacy_side_journal_path(store: "Store") -> Path:  # noqa: F821
    """Where longsum before schema 3 kept paid answers for a held file (call records, one per line)."""
    if store.lake is not None:
        return spool_path(store).with_suffix(".calls")  # never written: a lake is newer than schema 3
    return store.path.with_name(store.path.name + ".calls.jsonl")


def _rejected_path(store: "Store") -> Path:  # noqa: F821
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


def append_spool(store: "Store", ops: Sequence[dict]) -> None:  # noqa: F821
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


def read_spool(store: "Store") -> list[dict]:  # noqa: F821
    path = spool_path(store)
    if not path.exists() or path.stat().st_size == 0:
        return []
    with _locked_file(path, "r") as fh:
        return _entries(fh.read())[0]


def merge_spool(store: "Store", con) -> int:  # noqa: F821
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


def _reject(store: "Store", entry: dict, reason: str) -> None:  # noqa: F821
    import sys

    path = _rejected_path(store)
    with _locked_file(path, "a") as fh:
        fh.write(json.dumps({**entry, "rejected": reason}, ensure_ascii=False, default=_encode) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    print(f"longsum: a spooled write could not be applied to {store.path} ({reason[:200]}); kept in {path}",
          file=sys.stderr)


def _merge_legacy_side_journal(store: "Store", con) -> int:  # noqa: F821
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
