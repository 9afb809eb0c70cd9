"""Writes as data: the operations `Store.write` applies in one transaction (`insert_op`,
`sql_op`), and `write_table`, the one writer of every table (texts stored once)."""

from __future__ import annotations

import functools
import json
from typing import Sequence

from pipelines.store.schema import ADDRESSED, KEYS


def insert_op(table: str, rows: Sequence[dict] | None = None, *, arrow=None, ignore_conflicts: bool = False,
              known_calls: str | None = None) -> dict:
    """An insert for `Store.write`: dict rows, or an Arrow table. `known_calls`
    (llm_calls only) says what becomes of a row whose call_id is stored already:
    'skip' it, or 'replay' it (a new call_id, marked cached)."""
    op = {"insert": table, "ignore_conflicts": ignore_conflicts, "known_calls": known_calls}
    if arrow is not None:
        op["arrow"] = arrow
    else:
        op["rows"] = [_nested_as_json(r) for r in rows or []]
    return op


def sql_op(sql: str, params: Sequence | None = None) -> dict:
    """A statement for `Store.write` (INSERT, UPDATE or DELETE)."""
    return {"sql": sql, "params": list(params or [])}


def _empty(op: dict) -> bool:
    if "sql" in op:
        return False
    return op["arrow"].num_rows == 0 if "arrow" in op else not op["rows"]


def apply_ops(con, ops: Sequence[dict], message: bool = False) -> None:
    """The operations in one transaction; `message` (a lake): with a commit message saying what it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        for op in ops:
            apply_op(con, op)
        if message:
            _commit_message(con, ops)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _rollback(con) -> None:
    """ROLLBACK, when a transaction is still open (a COMMIT that failed has ended it)."""
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _commit_message(con, ops: Sequence[dict]) -> None:
    from pipelines.lake import commit_message

    commit_message(con, ops)


def apply_op(con, op: dict) -> None:
    if "sql" in op:
        con.execute(op["sql"], op["params"])
        return
    import pyarrow as pa

    table = op["arrow"] if "arrow" in op else pa.Table.from_pylist(op["rows"])
    write_table(con, op["insert"], table, ignore_conflicts=op.get("ignore_conflicts", False),
                known_calls=op.get("known_calls"))


def write_table(con, name: str, table, *, ignore_conflicts: bool = False, known_calls: str | None = None) -> None:
    """The one writer of every table: Arrow rows into `name`. For `llm_calls`,
    `chunks` and `summaries` the texts go to `texts` (each distinct one once)
    and the rows, naming them by hash, to the row table behind the view.
    `ignore_conflicts`: a row whose key (KEYS) is stored already is kept as it
    is (an anti-join, on a file and on a lake alike)."""
    con.register("_longsum_rows", table)
    try:
        if name not in ADDRESSED:
            key = KEYS.get(name) if ignore_conflicts else None
            where = f' WHERE "{key}" NOT IN (SELECT "{key}" FROM "{name}" WHERE "{key}" IS NOT NULL)' if key else ""
            con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _longsum_rows{where}')
            return
        rows, hashed, _ = ADDRESSED[name]
        columns = list(table.column_names)
        texts = [c for c in hashed if c in columns]
        if texts:
            union = " UNION ALL ".join(f'SELECT CAST("{c}" AS VARCHAR) AS v FROM _longsum_rows' for c in texts)
            con.execute(f"INSERT INTO texts SELECT sha256(v) AS h, v FROM (SELECT DISTINCT v FROM ({union})) "
                        "WHERE v IS NOT NULL AND h NOT IN (SELECT hash FROM texts)")
        select = [f'"{c}"' for c in columns if c not in hashed]
        select += [f'sha256(CAST("{c}" AS VARCHAR)) AS "{hashed[c]}"' for c in texts]
        where = ""
        if name == "llm_calls" and known_calls == "skip":
            where = " WHERE call_id NOT IN (SELECT call_id FROM llm_call_rows WHERE call_id IS NOT NULL)"
        elif name == "llm_calls" and known_calls == "replay":
            known = "call_id IN (SELECT call_id FROM llm_call_rows WHERE call_id IS NOT NULL)"
            select = [
                f"CASE WHEN {known} THEN replace(CAST(gen_random_uuid() AS VARCHAR), '-', '') ELSE call_id END "
                "AS call_id" if c == '"call_id"' else f"cached OR {known} AS cached" if c == '"cached"' else c
                for c in select
            ]
        con.execute(f'INSERT INTO {rows} BY NAME SELECT {", ".join(select)} FROM _longsum_rows{where}')
    finally:
        con.unregister("_longsum_rows")


def _writes_only(sql: str) -> bool:
    """True when every statement of `sql` is an INSERT, UPDATE or DELETE."""
    return _statement_kinds(sql) <= {"INSERT", "UPDATE", "DELETE"} and bool(_statement_kinds(sql))


@functools.lru_cache(maxsize=512)
def _statement_kinds(sql: str) -> frozenset:
    import duckdb

    try:
        return frozenset(s.type.name for s in duckdb.extract_statements(sql))
    except duckdb.Error:
        return frozenset()


def _nested_as_json(row: dict) -> dict:
    """A row for Arrow: its dict and list values as JSON text (what the JSON columns take)."""
    return {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in row.items()}
