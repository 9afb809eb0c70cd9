"""Where longsum keeps its files (light: read by the CLI at start-up)."""

from __future__ import annotations

import os
from pathlib import Path


def default_db() -> Path | str:
    """What commands use without --db: $LONGSUM_DB (a file, or a lake: `ducklake:...`), else the
    embedded default file (`default_db_path`)."""
    env = os.environ.get("LONGSUM_DB")
    if env and env.startswith("ducklake:"):
        from pipelines.lake import Lake

        return Lake.parse(env).spec  # without its password (that goes to PGPASSWORD)
    return default_db_path()


def default_db_path() -> Path:
    """$LONGSUM_DB when it names a file, else $XDG_DATA_HOME/longsum/longsum.duckdb (~/.local/share/...)."""
    env = os.environ.get("LONGSUM_DB")
    if env and not env.startswith("ducklake:"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "longsum" / "longsum.duckdb"


def longsum_home() -> Path:
    """$LONGSUM_HOME, else ~/.cache/longsum: the assembled model, datasets."""
    return Path(os.environ.get("LONGSUM_HOME") or Path.home() / ".cache" / "longsum")
