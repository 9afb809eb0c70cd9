"""The compressed code put together: kept chunks, pruned functions and one
placeholder line for each run of dropped code (`layout`), and a pruned
function's kept blocks with placeholders for the rest (`join_blocks`)."""

from __future__ import annotations

from pipelines.compress.longcodezip.functions import CodeChunk, header_text
from pipelines.compress.longcodezip.lines import indentation, placeholder_line
from pipelines.compress.longcodezip.syntax import _LineRules, _opens_block


def _opens_body(chunk: CodeChunk) -> bool:
    """A class chunk that is its header alone: its body is its members."""
    return chunk.kind == "class" and bool(chunk.name) and not any(
        line.strip() and not line.lstrip().startswith("#") for line in chunk.lines[chunk.signature_lines:])


def layout(chunks, whole: set[int], heads: set[int], pruned: dict[int, str],
           language: str | None) -> list[tuple[int, int, str, bool]]:
    """The compressed code as pieces (start, end, text, verbatim) in order:
    kept code (text == code[start:end]), a pruned function's text, and one
    placeholder line for each run of dropped code [start, end), at the
    indentation of its first line. A class kept as its header alone shows
    its header line(s); the rest of its chunk joins the dropped run. In
    Python a placeholder that would be a block's whole body (after a class
    header whose members are all dropped) is the statement ``...``."""
    out: list[tuple[int, int, str, bool]] = []
    run: list[str] = []
    run_start = 0
    statement = opened = False

    def flush(end: int) -> None:
        if run:
            out.append((run_start, end, placeholder_line(indentation("".join(run)), language, statement), False))
            run.clear()

    def drop(start: int, text: str) -> None:
        nonlocal run_start, statement
        if not run:
            run_start, statement = start, opened
        run.append(text)

    for i, chunk in enumerate(chunks):
        if i in whole:
            flush(chunk.start)
            if i in pruned:
                out.append((chunk.start, chunk.end, pruned[i], False))
                opened = False
            else:
                out.append((chunk.start, chunk.end, chunk.text, True))
                opened = _opens_body(chunk)
        elif i in heads:
            flush(chunk.start)
            head = header_text(chunk)
            rest = chunk.text[len(head):]
            if rest.strip():
                out.append((chunk.start, chunk.start + len(head), head, True))
                opened = True
                drop(chunk.start + len(head), rest)
            else:
                out.append((chunk.start, chunk.end, chunk.text, True))
                opened = True
        else:
            drop(chunk.start, chunk.text)
    flush(chunks[-1].end if chunks else 0)
    return out


def join_blocks(chunk: CodeChunk, blocks: list[tuple[int, int]], kept: set[int], language: str | None,
                syntax: "_LineRules | None" = None) -> str:
    """The signature, the lines of the kept blocks (with, in Python, what
    their syntax needs: `python_line_rules`), and one placeholder per run
    of dropped lines: the statement ``...`` where it follows a line that
    opens a block (the signature, an ``if ...:``), else a comment."""
    lines = chunk.lines
    keep = {i for j in kept for i in range(*blocks[j])}
    if syntax is not None:
        keep = syntax.close(keep)
    out = ["".join(lines[: chunk.signature_lines])]
    run: list[str] = []

    def flush() -> None:
        if not run:
            return
        if any(line.strip() for line in run):
            opens = _opens_block("".join(out))
            out.append(placeholder_line(indentation("".join(run)), language, statement=opens))
        else:
            out.extend(run)  # blank lines only
        run.clear()

    for i in range(chunk.signature_lines, len(lines)):
        if i in keep:
            flush()
            out.append(lines[i])
        else:
            run.append(lines[i])
    flush()
    return "".join(out)
