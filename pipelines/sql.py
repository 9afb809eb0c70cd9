"""Read-only SQL over the store, and plain renderings of a result.

Queries run on a read-only connection with DuckDB's external access turned
off and the configuration locked: no writes, no ATTACH, no COPY ... TO, no
extension INSTALL/LOAD and no reading of arbitrary files, whatever the SQL
says. On a lake the same holds: the lake is attached read-only before the
configuration is locked, and since the extensions that reach its catalog
bring functions that pass SQL to the catalog's server, only SELECTs that call
none of them run (`pipelines.lake.check_sandboxed`).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json

from pipelines.secrets import first_line
from pipelines.store import Store, StoreError

SANDBOX = {"enable_external_access": False, "lock_configuration": True, "autoload_known_extensions": False,
           "autoinstall_known_extensions": False}


def run_readonly_query(store: Store, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """A query on a read-only, sandboxed connection (what `summarize sql` runs)."""
    return _run(store, sql, params, SANDBOX)


def run_query(store: Store, sql: str) -> tuple[list[str], list[tuple]]:
    """Any statement, on a normal read-write connection (`summarize sql --unsafe`)."""
    return _run(store, sql, None, None)


def _run(store: Store, sql: str, params: list | None, config: dict | None) -> tuple[list[str], list[tuple]]:
    import duckdb

    with store.connect(config=config) as con:
        if store.lake is not None and config is not None and config.get("enable_external_access") is False:
            from pipelines.lake import LakeError, check_sandboxed

            try:
                check_sandboxed(con, sql)
            except LakeError as exc:
                raise StoreError(str(exc)) from None
        try:
            cursor = con.execute(sql, params or [])
        except duckdb.Error as exc:
            raise StoreError(f"SQL error: {first_line(str(exc))[:300]}") from None
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_cell(value):
    """A cell as a value json.dumps takes (times as ISO text, decimals as floats, bytes as hex)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def render(columns: list[str], rows: list[tuple], fmt: str = "table", max_width: int = 60) -> str:
    if fmt == "json":
        return json.dumps([{c: _json_cell(v) for c, v in zip(columns, row)} for row in rows], ensure_ascii=False, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    if not columns:
        return "(no result)"
    cells = [[_shorten(_cell(v), max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    footer = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    return "\n".join([line, rule, *body, footer])


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
