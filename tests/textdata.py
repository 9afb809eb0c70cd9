"""Helpers for the texts tests (and the benchmarks) run on."""

from __future__ import annotations


def excerpt(text: str, words: int) -> str:
    """The first `words` words of text, cut at a paragraph end."""
    out, count = [], 0
    for para in text.split("\n\n"):
        out.append(para)
        count += len(para.split())
        if count >= words:
            break
    return "\n\n".join(out) + "\n"
