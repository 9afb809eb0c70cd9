"""What Python syntax a compressed function needs: the lines a kept line
brings (`python_line_rules`), code moved to column 0 to parse, and whether a
compressed text still parses."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from pipelines.compress.longcodezip.functions import CodeChunk
from pipelines.compress.longcodezip.lines import split_lines


@dataclass
class _LineRules:
    """What keeping a line of a Python function brings with it (line indices of the chunk)."""

    statement: dict[int, tuple[int, int]]  # a line of a simple statement -> all its lines [a, b)
    needs: list[tuple[int, int, list[int]]]  # (a, b, header lines): a kept line in [a, b) keeps these

    def close(self, keep: set[int]) -> set[int]:
        keep = set(keep)
        for _ in range(4):  # headers of nested statements: a few passes reach the fixpoint
            before = len(keep)
            for line in list(keep):
                if line in self.statement:
                    keep.update(range(*self.statement[line]))
            for a, b, header in self.needs:
                if any(a <= line < b for line in keep):
                    keep.update(header)
            if len(keep) == before:
                break
        return keep


def python_line_rules(chunk: CodeChunk) -> "_LineRules | None":
    """The syntax a Python function's kept lines need (None when it does not
    parse alone): a statement is kept whole (never half a call, half a
    string), and a kept line keeps the header of every compound statement
    around it (``for ...:``, ``if ...:``, ``try:`` with its first
    ``except ...:`` or its ``finally:``, and the ``else:``/``finally:`` of
    the clause it sits in). A body left empty gets
    the statement placeholder (`_join_blocks`)."""
    try:
        tree = ast.parse(dedent_code(chunk.text))
    except (SyntaxError, ValueError, RecursionError):
        return None
    lines = chunk.lines
    statement: dict[int, tuple[int, int]] = {}
    needs: list[tuple[int, int, list[int]]] = []

    def first(node) -> int:
        decorators = getattr(node, "decorator_list", [])
        line = getattr(node, "lineno", None) or node.pattern.lineno  # match_case has no lineno
        return min([line] + [d.lineno for d in decorators]) - 1

    def last(nodes) -> int:
        return max(n.end_lineno for n in nodes)

    def code_lines(a: int, b: int) -> list[int]:
        return [i for i in range(a, b) if lines[i].strip() and not lines[i].lstrip().startswith("#")]

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, (ast.stmt, ast.excepthandler, ast.match_case)) or isinstance(node, ast.Module):
            continue
        a = first(node)
        end = getattr(node, "end_lineno", None) or last(body)
        if not isinstance(body, list) or not body:
            for i in range(a, end):
                statement[i] = (a, end)
            continue
        header = list(range(a, first(body[0])))  # the header, decorators and all
        handlers = getattr(node, "handlers", None)
        if handlers:  # `try:` needs a clause: its first `except ...:`
            header += range(first(handlers[0]), first(handlers[0].body[0]))
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) and node.finalbody:
            header += code_lines(last(node.orelse or body), first(node.finalbody[0]))
        needs.append((a, end, header))
        previous = last(body)
        for clause in ("handlers", "orelse", "finalbody"):
            part = getattr(node, clause, None) or []
            if not part:
                continue
            if clause != "handlers":  # `else:` / `finally:`: the code line between the parts
                needs.append((first(part[0]), last(part), code_lines(previous, first(part[0]))))
            previous = last(part)
    return _LineRules(statement, needs)


def dedent_code(text: str) -> str:
    """Python code of one chunk moved to column 0, line for line: a method
    chunk may end with comments at column 0 (a banner before the next
    class), which `textwrap.dedent` would let block it; comment lines
    shallower than the code become blank."""
    indent = next((line[: len(line) - len(line.lstrip(" \t"))] for line in split_lines(text)
                   if line.strip() and not line.lstrip().startswith("#")), "")
    out = []
    for line in split_lines(text):
        if line.startswith(indent):
            out.append(line[len(indent):])
        elif not line.strip() or line.lstrip().startswith("#"):
            out.append("\n" if line.endswith("\n") else "")
        else:
            out.append(line)  # a continuation line of a string or bracket: left as it is
    return "".join(out)


def _opens_block(text: str) -> bool:
    """Whether the last code line of text ends with a colon (a block's header)."""
    for line in reversed(split_lines(text)):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return _without_comment(stripped).rstrip().endswith(":")
    return False


def _without_comment(line: str) -> str:
    """A line of Python up to its comment (a ``#`` outside quotes)."""
    quote, escaped = None, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _parses_like(original: str, compressed: str, language: str | None) -> bool:
    """False only for Python whose original parses (dedented) and whose compressed text does not."""
    if (language or "python").lower() != "python":
        return True
    try:
        ast.parse(dedent_code(original))
    except (SyntaxError, ValueError, RecursionError):
        return True
    try:
        ast.parse(dedent_code(compressed))
    except (SyntaxError, ValueError, RecursionError):
        return False
    return True
