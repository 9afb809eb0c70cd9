"""Real lakes for tests: a PostgreSQL database per test (created, then dropped) on the machine's
server (tests/start_postgres.sh, which `make test` runs), and other OS users to write as.

Without the server or the DuckDB extensions the lake tests are skipped, unless
LONGSUM_REQUIRE_LAKE=1 (set by `make test`): then they fail, so CI cannot pass without them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest

SOCKET = "/var/run/postgresql"
ROOT = Path(__file__).resolve().parent.parent


def _unavailable(why: str):
    if os.environ.get("LONGSUM_REQUIRE_LAKE") == "1":
        pytest.fail(f"lake tests need {why} (LONGSUM_REQUIRE_LAKE=1)")
    pytest.skip(f"lake tests need {why}")


def require_lake() -> None:
    import duckdb

    from pipelines.lake import extension_files

    missing = {"ducklake", "postgres_scanner", "sqlite_scanner"} - set(extension_files())
    if missing:
        _unavailable(f"the DuckDB extension wheels {sorted(missing)} for duckdb {duckdb.__version__}")
    if shutil.which("createdb") is None:
        _unavailable("PostgreSQL's client tools (createdb)")
    probe = subprocess.run(["psql", "-h", SOCKET, "-d", "postgres", "-Atc", "SELECT 1"], capture_output=True, text=True)
    if probe.returncode != 0:
        _unavailable(f"a running PostgreSQL with a role for this user (tests/start_postgres.sh): {probe.stderr.strip()}")


def create_database() -> str:
    name = f"longsum_test_{uuid.uuid4().hex[:12]}"
    subprocess.run(["createdb", "-h", SOCKET, name], check=True, capture_output=True)
    return name


def drop_database(name: str) -> None:
    subprocess.run(["dropdb", "-h", SOCKET, "--if-exists", "--force", name], capture_output=True)


def conninfo(name: str) -> str:
    return f"ducklake:postgres:dbname={name} host={SOCKET}"


def other_user(name: str) -> str | None:
    """An OS user `name` with a PostgreSQL role of its own (peer authentication); None when this
    process cannot make one (not root), and the test then writes as this user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    made = subprocess.run(["su", "postgres", "-c", f"createuser -s {name}"], capture_output=True, text=True)
    if made.returncode != 0 and "already exists" not in made.stderr:
        raise RuntimeError(f"createuser {name}: {made.stderr}")
    # The user must be able to run this Python (a venv whose interpreter lives under a 0700 /root
    # cannot): else the test writes as this user, in its own folder and HOME still.
    probe = subprocess.run(_dropped_to(name) + [sys.executable, "-c", "import pipelines.store"],
                           capture_output=True, cwd="/", env={**os.environ, "PYTHONPATH": _pythonpath()})
    if probe.returncode != 0:
        warnings.warn(f"user {name} cannot run {sys.executable}; the lake's writers run as {pwd.getpwuid(os.getuid()).pw_name}")
        return None
    return name


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)


def _dropped_to(user: str) -> list[str]:
    """A command prefix that runs as `user`, groups cleared, the environment given to Popen kept
    (setpriv: runuser's PAM session refused to start this venv's interpreter here)."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


def as_user(user: str | None, command: list[str], cwd: Path) -> list[str]:
    """`command` run as `user` in `cwd`."""
    if user is None:
        return command
    os.chown(cwd, pwd.getpwnam(user).pw_uid, -1)
    return _dropped_to(user) + command


def user_env(base: dict, user: str | None, home: Path) -> dict:
    """The environment of a writer on its own 'machine': its HOME, data and cache folders."""
    env = {**base, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "LONGSUM_HOME": str(home / "cache"),
           "PREFECT_HOME": str(home / "prefect")}
    if user is not None:
        env["USER"] = env["LOGNAME"] = user
    home.mkdir(parents=True, exist_ok=True)
    if user is not None:
        uid = pwd.getpwnam(user).pw_uid
        for folder in (home,):
            os.chown(folder, uid, -1)
    return env
