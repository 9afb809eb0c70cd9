"""Code as lines, and the placeholder line that stands for dropped code."""

from __future__ import annotations

import re

PLACEHOLDER = "..."
_HASH_COMMENT = {"python", "shell", "ruby", "r", "julia", "elixir", "perl"}
_DASH_COMMENT = {"sql", "haskell", "lua"}


def split_lines(text: str) -> list[str]:
    """Lines with their newline; ''.join() gives text back (only \\n ends a line)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def comment_marker(language: str | None) -> str:
    language = (language or "python").lower()
    if language in _HASH_COMMENT:
        return "#"
    if language in _DASH_COMMENT:
        return "--"
    return "//"


def indentation(text: str) -> str:
    for line in split_lines(text):
        if line.strip():
            return line[: len(line) - len(line.lstrip(" \t"))]
    return ""


def placeholder_line(indent: str, language: str | None, statement: bool = False) -> str:
    """The line that stands for dropped code: a comment, or in Python, where
    it is all a block's body would hold (`statement`), the statement ``...``
    (a comment alone is no body: the code would not parse)."""
    if statement and (language or "python").lower() == "python":
        return f"{indent}{PLACEHOLDER}\n"
    return f"{indent}{comment_marker(language)} {PLACEHOLDER}\n"
