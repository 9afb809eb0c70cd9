"""The `summarize` console script.

`summarize --help` is the command people run most often and the one that
must answer at once, but importing click alone costs about twice Python's
own start-up. So the top-level help page, once click has rendered it, is
kept in the user's cache directory and printed from there while nothing
that shapes it has changed: the cache records the files the text comes from
(pipelines/cli.py, click, click-default-group) with their size and mtime,
and is keyed by the help width, so an edit, an upgrade or a narrower
terminal renders it again. Everything else goes straight to pipelines.cli.
This module imports nothing beyond what Python has already loaded.
"""

from __future__ import annotations

import os
import sys

HELP_ARGS = (["--help"], ["-h"])
CACHE_FORMAT = "longsum-help 1"


def main() -> None:
    if sys.argv[1:] in HELP_ARGS and os.environ.get("LONGSUM_HELP_CACHE", "1") != "0":
        width = help_width()
        text = read_cached_help(width)
        if text is None:
            text = render_help(width)
            write_cached_help(width, text)
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        return
    from pipelines.cli import main as cli_main

    cli_main()


def help_width() -> int:
    """The width click's HelpFormatter would choose, computed as
    shutil.get_terminal_size does it but without importing shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)


def render_help(width: int) -> str:
    """The top-level help page exactly as `click` prints it."""
    from pipelines.cli import cli

    with cli.make_context("summarize", [], resilient_parsing=True, terminal_width=width) as ctx:
        return ctx.get_help() + "\n"


def _cache_path(width: int) -> str:
    import zlib

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    # One file per install (virtual environment) and width.
    install = zlib.crc32(f"{sys.prefix}\0{__file__}".encode())
    return os.path.join(base, "longsum", f"help-{install:08x}-{width}.txt")


def _signature(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _source_files() -> list[str]:
    import click
    import click_default_group

    from pipelines import cli

    return [cli.__file__, click.__file__, os.path.join(os.path.dirname(click.__file__), "core.py"),
            os.path.join(os.path.dirname(click.__file__), "formatting.py"), click_default_group.__file__]


def read_cached_help(width: int) -> str | None:
    """The cached page, or None when there is none or any source changed."""
    try:
        with open(_cache_path(width), encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n")
            count = int(handle.readline())
            sources = [handle.readline().rstrip("\n").rsplit("\t", 1) for _ in range(count)]
            text = handle.read()
        if header != CACHE_FORMAT or not text:
            return None
        if any(_signature(path) != signature for path, signature in sources):
            return None
        return text
    except (OSError, ValueError):
        return None


def write_cached_help(width: int, text: str) -> None:
    """Best effort and atomic: an unwritable cache only costs speed."""
    path = _cache_path(width)
    try:
        sources = _source_files()
        lines = [CACHE_FORMAT, str(len(sources)), *(f"{source}\t{_signature(source)}" for source in sources)]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n" + text)
        os.replace(temporary, path)
    except (OSError, ValueError):
        pass
