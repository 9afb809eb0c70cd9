"""Where longsum keeps its files (light: read by the CLI at start-up)."""

from __future__ import annotations

import os
from pathlib import Path


def default_db_path() -> Path:
    """$LONGSUM_DB, else $XDG_DATA_HOME/longsum/longsum.duckdb (~/.local/share/...)."""
    env = os.environ.get("LONGSUM_DB")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "longsum" / "longsum.duckdb"


def longsum_home() -> Path:
    """$LONGSUM_HOME, else ~/.cache/longsum: the assembled model, datasets."""
    return Path(os.environ.get("LONGSUM_HOME") or Path.home() / ".cache" / "longsum")
