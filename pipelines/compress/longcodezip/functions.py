"""The coarse stage's units: code split into function-level chunks
(contiguous and lossless), and the class headers a kept method brings."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Sequence

from pipelines.compress.longcodezip.lines import split_lines


@dataclass(frozen=True)
class CodeChunk:
    idx: int
    start: int  # character offsets into the code
    end: int
    text: str
    kind: str  # function | method | class | module | tail | code
    name: str | None = None
    signature_lines: int = 0  # leading lines always kept by the fine stage
    owner: str | None = None  # the class (qualified name) the chunk sits in, None at module level

    @property
    def lines(self) -> list[str]:
        return split_lines(self.text)


@dataclass
class _Unit:
    line: int  # 0-based first line
    kind: str
    name: str | None
    header_end: int | None = None  # 0-based line after the def/class header
    owner: str | None = None  # qualified name of the enclosing class


def split_code(code: str, language: str | None = "python", max_module_lines: int = 30) -> list[CodeChunk]:
    """Function-level chunks of code, contiguous and lossless."""
    if not code:
        return []
    lines = split_lines(code)
    units = None
    if (language or "python").lower() == "python":
        units = _python_units(lines, max_module_lines)
    if units is None:
        units = _pattern_units(code, lines, language)
    return _chunks_from_units(code, lines, units)


def parse_longest_prefix(lines: list[str]) -> tuple[ast.Module | None, int]:
    """Parse the longest prefix that parses (a context often ends mid-definition)."""
    n = len(lines)
    for _ in range(40):
        if n <= 0:
            return None, 0
        try:
            return ast.parse("".join(lines[:n])), n
        except SyntaxError as exc:
            bad = exc.lineno or n
            n = min(n - 1, bad - 1) if bad - 1 >= 1 else n - 1
        except (ValueError, RecursionError):
            return None, 0
    return None, 0


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators]) - 1


def _header_end(node: ast.stmt) -> int:
    body = getattr(node, "body", None)
    if body and body[0].lineno > node.lineno:
        return body[0].lineno - 1
    return node.end_lineno or node.lineno


def _python_units(lines: list[str], max_module_lines: int) -> list[_Unit] | None:
    tree, parsed = parse_longest_prefix(lines)
    if tree is None:
        return None
    units: list[_Unit] = []
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)

    def visit(stmts: list[ast.stmt], prefix: str, in_class: bool) -> None:
        after_def = not in_class  # module: the first statements open a group
        group_start = None
        owner = prefix[:-1] or None
        for st in stmts:
            if isinstance(st, defs):
                units.append(_Unit(_first_line(st), "method" if in_class else "function", prefix + st.name,
                                   _header_end(st), owner))
                after_def, group_start = True, None
            elif isinstance(st, ast.ClassDef):
                units.append(_Unit(_first_line(st), "class", prefix + st.name, _header_end(st), owner))
                visit(st.body, prefix + st.name + ".", True)
                after_def, group_start = True, None
            else:
                start = _first_line(st)
                if after_def or (group_start is not None and start - group_start >= max_module_lines):
                    units.append(_Unit(start, "class" if in_class else "module", None, owner=owner))
                    group_start = start
                elif group_start is None:
                    group_start = start
                after_def = False

    visit(tree.body, "", False)
    if parsed < len(lines):
        units.append(_Unit(parsed, "tail", None))
    # Comment lines directly above a definition belong to it.
    for i, unit in enumerate(units):
        floor = units[i - 1].line + 1 if i else 0
        line = unit.line
        while line - 1 >= floor and lines[line - 1].lstrip().startswith("#"):
            line -= 1
        if unit.header_end is not None:
            unit.header_end = max(unit.header_end, line)
        unit.line = line
    return units


_SIGNATURE_END = re.compile(r"[{:;]\s*(//.*|#.*)?$|\)\s*(->\s*[^{]*)?$")


def _pattern_units(code: str, lines: list[str], language: str | None) -> list[_Unit]:
    from pipelines.documents import code_sections

    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    units = []
    for section in code_sections(code, language):
        line = _line_of(starts, section.start)
        header_end = line + 1
        for j in range(line, min(len(lines), line + 6)):
            if _SIGNATURE_END.search(lines[j].rstrip()):
                header_end = j + 1
                break
        units.append(_Unit(line, section.kind, section.title, header_end))
    return units


def _line_of(starts: list[int], offset: int) -> int:
    import bisect

    return max(0, bisect.bisect_right(starts, offset) - 1)


def _chunks_from_units(code: str, lines: list[str], units: list[_Unit]) -> list[CodeChunk]:
    by_line: dict[int, _Unit] = {}
    for unit in units:
        by_line.setdefault(unit.line, unit)
    boundaries = sorted({0, *[u.line for u in units if 0 < u.line < len(lines)]})
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    chunks = []
    for i, first in enumerate(boundaries):
        last = boundaries[i + 1] if i + 1 < len(boundaries) else len(lines)
        unit = by_line.get(first)
        if unit is None:  # text before the first definition
            kind, name, signature, owner = ("module" if units else "code"), None, 0, None
        else:
            kind, name, owner = unit.kind, unit.name, unit.owner
            signature = 0 if unit.header_end is None else max(0, min(last, unit.header_end) - first)
        start, end = offsets[first], offsets[last]
        chunks.append(CodeChunk(len(chunks), start, end, code[start:end], kind, name, signature, owner))
    return chunks


def class_headers(chunks: Sequence[CodeChunk]) -> list[list[int]]:
    """For each chunk, the header chunks of the classes it sits in, outermost
    first: a kept method is shown under its own class, so these come with it."""
    latest: dict[str, int] = {}  # class name -> its latest header chunk (a name may be defined twice)
    out = []
    for chunk in chunks:
        chain, owner = [], chunk.owner
        while owner:
            if owner in latest:
                chain.append(latest[owner])
            owner = owner.rpartition(".")[0]
        out.append(chain[::-1])
        if chunk.kind == "class" and chunk.name:
            latest[chunk.name] = chunk.idx
    return out


def header_text(chunk: CodeChunk) -> str:
    """A class chunk's header: decorators, comments and the ``class`` line(s)."""
    return "".join(chunk.lines[: chunk.signature_lines])
