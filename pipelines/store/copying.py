"""Moving in: a DuckDB file copied into a lake, and back (or alike), counted table by table."""

from __future__ import annotations

from pipelines.store.connection import Store
from pipelines.secrets import first_line
from pipelines.store.errors import StoreError
from pipelines.store.schema import _base_tables, _sql_quote
from pipelines.store.writes import _rollback


def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Copy every table of `source` into `target` (a file into a lake, a lake into a file, or alike)
    in one transaction, then compare the counts table by table. `target` must hold no rows yet.
    Returns table -> rows copied."""
    import duckdb

    from pipelines.lake import load_extensions

    with source.connect():
        pass  # the source's version checked (an older file is migrated for reading first)
    skip = {"meta", "spool_applied"}
    with target.connect() as con:
        filled = [t for t in _base_tables(con, None) if t not in skip
                  and con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]]
        if filled:
            raise StoreError(f"{target.path} already holds rows ({', '.join(filled[:4])}): copy into a new "
                             "file or lake")
        if source.lake is not None:
            load_extensions(con, source.lake.catalog)
            where = source.lake.spec
        else:
            if not source.path.exists():
                raise StoreError(f"no database at {source.path}")
            where = str(source.path)
        try:
            con.execute(f"ATTACH '{_sql_quote(where)}' AS longsum_source (READ_ONLY)")
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {source.path} to copy it: {first_line(str(exc))}") from None
        try:
            tables = [t for t in _base_tables(con, "longsum_source") if t not in skip]
            known = set(_base_tables(con, None))
            missing = [t for t in tables if t not in known]
            if missing:
                raise StoreError(f"{source.path} has tables this longsum does not know: {', '.join(missing)}")

            def copy():
                for table in tables:
                    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM longsum_source.main."{table}"')

            try:
                if target.lake is not None:
                    target._commit_retrying(copy, con)
                else:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        copy()
                        con.execute("COMMIT")
                    except BaseException:
                        _rollback(con)
                        raise
            except duckdb.Error as exc:  # nothing was copied: the transaction rolled back
                raise StoreError(f"cannot copy {source.path} into {target.path}: {first_line(str(exc))}") from None
            counts = {}
            for table in tables:
                here, there = con.execute(f'SELECT (SELECT count(*) FROM "{table}"), '
                                          f'(SELECT count(*) FROM longsum_source.main."{table}")').fetchall()[0]
                if here != there:
                    raise StoreError(f"copy: {table} has {here} rows in {target.path}, {there} in {source.path}")
                counts[table] = here
        finally:
            con.execute("DETACH longsum_source")
    return counts
