"""What the benchmark scripts share: the repository on sys.path, the data
files (../shared/data when present, else the copies in tests/data), the
`--quick` settings, and a plain-text table."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
# The repository, and tests/ for the helpers benchmarks share with the tests
# (the fake OpenAI-compatible server, excerpt): benchmarks use test helpers,
# the test suite never imports benchmark code.
for _path in (ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from textdata import excerpt  # noqa: E402,F401 (benchmarks import it from here)

SHARED = ROOT.parent / "shared" / "data"
LOCAL = ROOT / "tests" / "data"


def data_file(*candidates: Path) -> Path:
    """The first of these files that exists."""
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(f"no data file among: {', '.join(map(str, candidates))}")


NUMBER = re.compile(r"^[-+]?[\d,.]+")


def book(name: str) -> Path:
    """A novel or story of the shared data set (or its copy in tests/data)."""
    return data_file(SHARED / "books" / name, LOCAL / "books" / name)


def apply_quick(parser: argparse.ArgumentParser, args: argparse.Namespace, quick: dict) -> None:
    """With --quick, every option named in `quick` that the user left at its default takes the quick value."""
    if args.quick:
        for name, value in quick.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)


def table(headers: list[str], rows: list[list], fmt: Callable[[object], str] = str) -> str:
    """Rows under headers; a column whose cells are all numbers (or "-") is right-aligned."""
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(NUMBER.match(r[i]) or r[i] in ("", "-") for r in cells[1:]) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and numeric[i] else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


