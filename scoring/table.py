"""Score rows as a table for the terminal."""

from __future__ import annotations

from typing import Sequence


def summary_table(rows: Sequence[dict]) -> tuple[list[str], list[tuple]]:
    """Per-summary numbers (no per-reference rows) as columns and rows for rendering."""
    out = []
    for row in rows:
        if row["reference_id"] is not None:
            continue
        value = row["value"]
        out.append((row["metric"], row["variant"], row["aggregate"] or "", None if value is None else round(value, 4)))
    return ["metric", "variant", "aggregate", "value"], out
