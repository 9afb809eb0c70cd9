"""The store's other target: a DuckLake (catalog in PostgreSQL or SQLite,
data as Parquet files under a data path) instead of one DuckDB file.

`--db ducklake:postgres:<libpq conninfo>` (many machines) or
`--db ducklake:sqlite:PATH` (several processes on one machine). The store
(`pipelines.store.Store`) is the one abstraction over both targets; this
module only knows how to name, attach and guard a lake:

- `Lake.parse` reads the spec. A password in the conninfo is taken out of
  it at once (into PGPASSWORD, which libpq reads, for this process and its
  children), so the spec that is stored, logged, passed to a Prefect task or
  shown in an error never holds it. Prefer PGPASSWORD, a ~/.pgpass or a
  service file (`service=NAME`) in the first place.
- `open_lake` loads the `ducklake` and `postgres_scanner`/`sqlite_scanner`
  extensions from the PyPI wheels' files (nothing is downloaded), attaches
  the lake as the catalog `lake`, read-only or as of a snapshot when asked.
- `check_sandboxed` is what the read-only sandbox adds on a lake: the
  extensions that reach the catalog bring functions that pass SQL to it
  (`postgres_query`, `postgres_execute`: reading server files, writing past
  the read-only attach), so `summarize sql` on a lake runs only SELECTs that
  name none of them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.secrets import CONNINFO_PASSWORD, first_line, redact

PREFIX = "ducklake:"
ALIAS = "lake"  # the catalog name queries see (`lake.snapshots()`); unqualified names resolve to it


def is_lake(target) -> bool:
    return isinstance(target, (str, Lake)) and str(target).startswith(PREFIX)


class LakeError(ValueError):
    """A lake that cannot be named or reached, in one line (a StoreError to the store)."""


@dataclass(frozen=True)
class Lake:
    """A lake target. `str(lake)` is its spec, without a password: safe to store, log and pass on."""

    spec: str
    catalog: str  # postgres | sqlite
    where: str  # the libpq conninfo, or the SQLite file
    data_path: str | None = None  # only needed when the lake is created; the catalog remembers it

    @classmethod
    def parse(cls, target: str, data_path: str | Path | None = None) -> "Lake":
        rest = str(target)[len(PREFIX):]
        catalog, _, where = rest.partition(":")
        if catalog not in ("postgres", "sqlite") or not where.strip():
            raise LakeError(f"cannot read the lake {redact(str(target))!r}: use "
                            "ducklake:postgres:<libpq conninfo> or ducklake:sqlite:PATH")
        where = where.strip()
        if catalog == "postgres":
            where = _take_password(where)
        else:
            where = str(Path(where).expanduser().resolve())
        data = data_path if data_path is not None else os.environ.get("LONGSUM_DATA_PATH") or None
        if data is not None:
            data = str(Path(data).expanduser().resolve())
        return cls(f"{PREFIX}{catalog}:{where}", catalog, where, data)

    def __str__(self) -> str:
        return redact(self.spec)

    # What code written for a file's Path asks of `store.path`.
    name = "lake"

    def exists(self) -> bool:
        return True

    def with_name(self, name: str) -> Path:
        """A file that would sit beside a database file: in the working directory."""
        return Path.cwd() / name


@dataclass(frozen=True)
class At:
    """A snapshot to read as of: its id, or a moment (the last snapshot committed by then)."""

    version: int | None = None
    time: dt.datetime | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> "At | None":
        if text is None or text == "":
            return None
        if isinstance(text, int) or str(text).strip().isdigit():
            return cls(version=int(text))
        try:
            moment = dt.datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise LakeError(f"--at {text!r} is neither a snapshot id nor a timestamp (YYYY-MM-DD[ HH:MM[:SS]])") \
                from None
        return cls(time=moment)

    def __str__(self) -> str:
        return f"snapshot {self.version}" if self.version is not None else f"{self.time.isoformat(sep=' ')}"

    def attach_option(self) -> str:
        if self.version is not None:
            return f"SNAPSHOT_VERSION {int(self.version)}"
        return f"SNAPSHOT_TIME '{self.time.isoformat(sep=' ')}'"


def _take_password(conninfo: str) -> str:
    """The conninfo without its password; the password goes to PGPASSWORD."""
    password = None
    match = CONNINFO_PASSWORD.search(conninfo)
    if match:
        password = match.group(1)
        if password.startswith("'"):
            password = re.sub(r"\\(.)", r"\1", password[1:-1])
        conninfo = (conninfo[:match.start()] + conninfo[match.end():]).strip()
        conninfo = re.sub(r"([?&])&+", r"\1", conninfo).rstrip("?&")  # a URI's query without the parameter
    uri = re.match(r"(?i)(postgres(?:ql)?://)([^:/@\s]*):([^@\s]*)@(.*)", conninfo)
    if uri:
        password = uri.group(3)
        conninfo = f"{uri.group(1)}{uri.group(2)}@{uri.group(4)}"
    conninfo = " ".join(conninfo.split())
    if password:
        os.environ["PGPASSWORD"] = password
    return conninfo


def extension_files() -> dict[str, Path]:
    """name -> the extension file shipped in its PyPI wheel, for the duckdb at hand."""
    import importlib.util

    import duckdb

    found = {}
    for name, package in (("ducklake", "duckdb_extension_ducklake"),
                          ("postgres_scanner", "duckdb_extension_postgres_scanner"),
                          ("sqlite_scanner", "duckdb_extension_sqlite_scanner")):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
            if path.exists():
                found[name] = path
    return found


def load_extensions(con, catalog: str) -> None:
    import duckdb

    files = extension_files()
    needed = ("ducklake", "postgres_scanner" if catalog == "postgres" else "sqlite_scanner")
    missing = [n for n in needed if n not in files]
    if missing:
        raise LakeError(
            f"a lake needs the DuckDB extension(s) {', '.join(missing)} for duckdb {duckdb.__version__}; "
            f"install the wheels duckdb-extension-{missing[0].replace('_', '-')}=={duckdb.__version__} "
            "(pip install 'longsum' with its pinned duckdb brings them)")
    for name in needed:
        con.execute(f"LOAD '{_quote(str(files[name]))}'")


def open_lake(lake: Lake, *, read_only: bool = False, at: At | None = None, sandbox: bool = False):
    """A DuckDB database (in memory) with the lake attached as `lake` and in use."""
    import duckdb

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        load_extensions(con, lake.catalog)
        options = []
        if read_only or at is not None:
            options.append("READ_ONLY")
        if at is not None:
            options.append(at.attach_option())
        if lake.data_path and not read_only:
            options.append(f"DATA_PATH '{_quote(lake.data_path.rstrip('/') + '/')}'")
        if lake.catalog == "sqlite" and not Path(lake.where).exists():
            if read_only:
                raise LakeError(f"no lake catalog at {lake.where} yet")
            Path(lake.where).parent.mkdir(parents=True, exist_ok=True)
        with_options = f" ({', '.join(options)})" if options else ""
        for attempt in range(8):
            try:
                con.execute(f"ATTACH '{_quote(lake.spec)}' AS {ALIAS}{with_options}")
                break
            except duckdb.Error as exc:
                # Writers that start together all find no catalog and create it: one wins, the
                # others meet its tables (duplicate key, already exists) and attach to them.
                if attempt < 7 and re.search(r"duplicate key|already exists|conflict", str(exc), re.I):
                    time.sleep(0.1 * (attempt + 1))
                    continue
                raise LakeError(describe_attach_error(lake, str(exc), at)) from None
        con.execute(f"USE {ALIAS}")
        if sandbox:  # the lake's own files stay readable; no other file is
            data = data_path_of(con)
            if data and "://" not in data:
                con.execute("SET allowed_directories = ?", [[data.rstrip("/") + "/"]])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        return con
    except BaseException:
        con.close()
        raise


def describe_attach_error(lake: Lake, message: str, at: At | None = None) -> str:
    first = first_line(message)
    lowered = message.lower()
    where = str(lake)
    if "creating a new ducklake is explicitly disabled" in lowered:
        return f"{where} is not a lake yet: write to it first (with --data-path DIR)"
    if "data_path" in lowered or "data path" in lowered:
        return f"{where} is a new lake: pass --data-path DIR (or LONGSUM_DATA_PATH), where its Parquet files go"
    if at is not None and ("snapshot" in lowered or "no snapshot" in lowered):
        return f"{where} has no snapshot at {at} ({first[:160]})"
    if "password" in lowered and "authentication" in lowered or "no password supplied" in lowered:
        return f"cannot log in to the lake's catalog {where}: set PGPASSWORD, a ~/.pgpass or a service file"
    if "invalid connection option" in lowered or "missing \"=\"" in lowered or "unterminated quoted" in lowered:
        return f"cannot read the conninfo of {where}: {first[:200]}"
    if "connection" in lowered or "could not connect" in lowered or "unable to connect" in lowered \
            or "does not exist" in lowered and "database" in lowered:
        return f"cannot reach the lake's catalog {where}: {first[:200]}"
    return f"cannot open the lake {where}: {first[:200]}"


def data_path_of(con) -> str | None:
    row = con.execute(f"SELECT value FROM {ALIAS}.options() WHERE option_name = 'data_path'").fetchall()
    return row[0][0] if row else None


def folder_size(folder: str | Path | None) -> int:
    if not folder:
        return 0
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


# -- what each commit was -------------------------------------------------------------------

def commit_message(con, ops) -> None:
    """`lake.set_commit_message` inside the transaction: who, the command, and the run ids the
    commit wrote (what `summarize snapshots` shows)."""
    import pwd
    import socket
    import sys

    run_ids: list[str] = []
    tables: list[str] = []
    for op in ops:
        if "insert" in op:
            tables.append(op["insert"])
            rows = op["arrow"].column("run_id").to_pylist() if "arrow" in op and "run_id" in op["arrow"].column_names \
                else [r.get("run_id") for r in op.get("rows", [])]
            run_ids += [r for r in rows if r]
        elif "sql" in op:
            kind = op["sql"].lstrip().split(None, 1)[0].upper()
            match = re.match(r"(?is)\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", op["sql"])
            tables.append(f"{kind.lower()} {match.group(1)}" if match else kind.lower())
            if "run_id" in op["sql"]:
                run_ids += [p for p in op["params"] if isinstance(p, str) and re.fullmatch(r"[0-9a-f]{8,64}", p)]
    run_ids = list(dict.fromkeys(run_ids))
    try:  # the account the process runs as (not $USER, which anyone may set)
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no name for this uid
        user = str(os.getuid())
    author = f"{user}@{socket.gethostname()}"
    command = os.environ.get("LONGSUM_COMMAND") or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    extra = json.dumps({"runs": run_ids[:50], "n_runs": len(run_ids), "tables": sorted(set(tables)),
                        "pid": os.getpid()})
    con.execute(f"CALL {ALIAS}.set_commit_message(?, ?, extra_info => ?)",
                [author, redact(command)[:300], extra])


# A commit another writer's got in the way of: retried. (A SQLite catalog answers a writer that
# meets another's lock with "database is locked".)
CONFLICT = re.compile(r"conflict|database is locked", re.IGNORECASE)


def is_conflict(exc: BaseException) -> bool:
    return CONFLICT.search(str(exc)) is not None


# -- the sandbox on a lake ------------------------------------------------------------------

# Functions that pass SQL or reach past the lake: the catalog's own connection (postgres_query
# runs anything the role may, pg_read_file included), SQLite files, SQL run from a string, and the
# lake's maintenance calls. Reading snapshots and table changes stays allowed.
_DENIED = re.compile(
    r"^(postgres_\w*|pg_\w*|sqlite_\w*|query|query_table|json_execute_serialized_sql|"
    r"ducklake_(?!snapshots$|table_info$|table_changes$|table_insertions$|table_deletions$)\w*|"
    r"set_commit_message|merge_adjacent_files|expire_snapshots|cleanup_old_files|delete_orphaned_files|"
    r"add_data_files|flush_inlined_data|rewrite_data_files|set_option)$",
    re.IGNORECASE,
)


def check_sandboxed(con, sql: str) -> None:
    """Raise LakeError unless every statement of `sql` is a SELECT that calls no denied function."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise LakeError(f"SQL error: {' '.join(str(exc).split())[:300]}") from None
    for statement in statements:
        if statement.type.name != "SELECT":
            raise LakeError(f"the read-only sandbox runs only queries, not {statement.type.name} "
                            "(use --unsafe to write)")
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone()[0])
        if tree.get("error"):
            raise LakeError("on a lake the read-only sandbox runs SELECT queries only (DESCRIBE, SHOW and "
                            "SUMMARIZE included; not PRAGMA)")
        for name in _function_names(tree):
            if _DENIED.match(name):
                raise LakeError(f"{name}() is not allowed in the read-only sandbox (use --unsafe)")


def _function_names(node) -> list[str]:
    names = []
    if isinstance(node, dict):
        if isinstance(node.get("function_name"), str):
            names.append(node["function_name"])
        for value in node.values():
            names += _function_names(value)
    elif isinstance(node, list):
        for value in node:
            names += _function_names(value)
    return names


def _quote(text: str) -> str:
    return text.replace("'", "''")
