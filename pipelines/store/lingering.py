"""A DuckDB file's connection kept between units of work, inside a scope such as one run.

Opening the file and closing it (a checkpoint) cost ~30 ms of CPU, and a run opened it twice per
LLM call (the journal's lookup and its record) and for every row it wrote: 71 opens for a 32-call
run, a third of its CPU against a fast server. Inside a `scope`, a unit of work hands its
connection back here instead of closing it, and the next unit of this process takes it up again.

Other processes still get the file within a unit of work, as when every unit opened its own
connection:
- a kept connection is closed once it has been idle for LINGER_S (a local model's call takes
  seconds: the file is free during it);
- a process that finds the file held says so while it waits, by a shared lock on
  `FILE.duckdb.waiting`; the holder then closes instead of keeping, at its next unit;
- the scope's end closes it, so the file is released (and checkpointed) when a run returns.

A connection is never handed across a fork: one kept before a fork is closed first."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LINGER_S = float(os.environ.get("LONGSUM_DB_LINGER_S") or 0.25)


@dataclass
class _Kept:
    con: object  # idle: no unit of work has it, so whoever pops it may close it
    read_only: bool
    idle_since: float


_KEPT: dict[str, _Kept] = {}  # path -> its idle connection
_SCOPES: dict[str, int] = {}  # path -> open scopes (a connection is kept only inside one)
_GUARD = threading.Condition()  # over _KEPT, _SCOPES and _reaper; notified when a connection is kept
_reaper: threading.Thread | None = None  # one per process, started with the first kept connection


def waiting_marker(path: Path) -> Path:
    return path.with_name(path.name + ".waiting")


@contextlib.contextmanager
def scope(key: str):
    """Units of work on `key` inside the block may share one connection; the last scope's end
    closes it."""
    with _GUARD:
        _SCOPES[key] = _SCOPES.get(key, 0) + 1
    try:
        yield
    finally:
        with _GUARD:
            left = _SCOPES.get(key, 1) - 1
            if left:
                _SCOPES[key] = left
            else:
                _SCOPES.pop(key, None)
        if not left:
            close_kept(key)


def take(key: str, read_only: bool, path: Path):
    """The connection kept for `key`, when it is of the same mode and no other process waits for the
    file; else None (and a kept one that does not suit is closed)."""
    with _GUARD:
        kept = _KEPT.pop(key, None)
    if kept is None:
        return None
    if kept.read_only == read_only and not someone_waits(path):
        return kept.con
    kept.con.close()
    return None


def give_back(key: str, con, read_only: bool, path: Path) -> None:
    """Keep `con` for the next unit of work inside a scope; close it outside one, or when another
    process waits for the file."""
    global _reaper
    if LINGER_S > 0 and not someone_waits(path):
        with _GUARD:
            if _SCOPES.get(key) and key not in _KEPT:
                _KEPT[key] = _Kept(con, read_only, time.monotonic())
                if _reaper is None or not _reaper.is_alive():
                    _reaper = threading.Thread(target=_close_idle, name="longsum-db-linger", daemon=True)
                    _reaper.start()
                _GUARD.notify()
                return
    con.close()


def close_kept(key: str) -> None:
    with _GUARD:
        kept = _KEPT.pop(key, None)
    if kept is not None:
        kept.con.close()


def _close_idle() -> None:
    """The reaper: closes each kept connection once it has been idle for LINGER_S; sleeps while
    none is kept."""
    while True:
        with _GUARD:
            while not _KEPT:
                _GUARD.wait()
            now = time.monotonic()
            idle = [_KEPT.pop(key) for key, kept in list(_KEPT.items()) if now - kept.idle_since >= LINGER_S]
            if not idle:
                _GUARD.wait(min(kept.idle_since for kept in _KEPT.values()) + LINGER_S - now)
        for kept in idle:
            kept.con.close()


def close_all() -> None:
    with _GUARD:
        keys = list(_KEPT)
    for key in keys:
        close_kept(key)


def _start_afresh_in_child() -> None:
    """A forked child has no reaper, and the parent's lock may have been taken at the fork."""
    global _GUARD, _reaper
    _GUARD, _reaper = threading.Condition(), None
    _KEPT.clear()
    _SCOPES.clear()


atexit.register(close_all)
os.register_at_fork(before=close_all, after_in_child=_start_afresh_in_child)


def someone_waits(path: Path) -> bool:
    """Another process holds a shared lock on the file's waiting marker."""
    try:
        fd = os.open(waiting_marker(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock too
    return False


class Waiting:
    """Says, while a process waits for a file another process holds, that it waits (see
    `someone_waits`); the marker is removed by the last waiter."""

    def __init__(self, path: Path):
        self.path = waiting_marker(path)
        self.fd: int | None = None

    def announce(self) -> None:
        if self.fd is not None:
            return
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_SH)
        except OSError:  # a read-only folder: the holder learns nothing and its idle time bounds the wait
            self.done()

    def done(self) -> None:
        if self.fd is None:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other waiter: the marker goes
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None
