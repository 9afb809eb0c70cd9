"""Does compressed code still hold what an answer needs?

For a code-completion task (a context, the query that opens the target
function, the real answer body): the names the answer reads that the context
defines are the definitions a compressor must keep. `retained` counts how
many of them survive in a compressed context, and `random_selection` is the
baseline it is measured against: whole function-level chunks taken in a
random order up to the same size. The LongCodeZip table in bench/README.md and
its tests count retention this way.
"""

from __future__ import annotations

import ast
import random
import textwrap

from pipelines.compress.longcodezip import indentation, parse_longest_prefix, placeholder_line, split_code, split_lines


def definitions(code: str) -> dict[str, list[str]]:
    """name -> the first lines of its definitions in code: def/class (any
    level outside function bodies), module/class-level assignments, imports,
    and `self.NAME = ...` assignments inside methods."""
    tree, _ = parse_longest_prefix(split_lines(code))
    lines = code.split("\n")
    out: dict[str, list[str]] = {}

    def add(name: str, lineno: int) -> None:
        out.setdefault(name, []).append(lines[lineno - 1].strip())

    def visit(stmts, in_class: bool) -> None:
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                add(st.name, st.lineno)
                if in_class:
                    for node in ast.walk(st):
                        for target in _targets(node):
                            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                                    and target.value.id == "self":
                                add(target.attr, target.lineno)
            elif isinstance(st, ast.ClassDef):
                add(st.name, st.lineno)
                visit(st.body, True)
            elif isinstance(st, (ast.Import, ast.ImportFrom)):
                for alias in st.names:
                    add((alias.asname or alias.name).split(".")[0], st.lineno)
            else:
                for target in _targets(st):
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            add(node.id, st.lineno)
                if isinstance(st, (ast.If, ast.Try, ast.With)):
                    visit(getattr(st, "body", []) + getattr(st, "orelse", []) + getattr(st, "finalbody", []), in_class)

    if tree is not None:
        visit(tree.body, False)
    return out


def _targets(node) -> list:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def used_names(query: str, answer: str) -> set[str]:
    """Names and attributes the answer body reads, minus what it (or the signature) binds locally."""
    source = textwrap.dedent(query.rstrip() + "\n" + answer)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.parse("def _f():\n" + textwrap.indent(textwrap.dedent(answer), "    "))
    used, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            used.add(node.attr)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    function = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if function is not None:
        bound.add(function.name)
    return used - bound


def needed_definitions(context: str, query: str, answer: str) -> tuple[dict[str, list[str]], set[str]]:
    """The context's definitions, and the names among them the answer reads
    (dunder methods aside: every class has them)."""
    defs = definitions(context)
    names = {n for n in used_names(query, answer) if n in defs and not (n.startswith("__") and n.endswith("__"))}
    return defs, names


def retained(defs: dict[str, list[str]], names: set[str], compressed: str) -> set[str]:
    """The names one of whose definition lines is still a line of `compressed`."""
    kept = {line.strip() for line in compressed.split("\n")}
    return {name for name in names if any(line in kept for line in defs[name])}


def random_selection(code: str, budget: int, count_tokens, seed: int) -> str:
    """Whole function-level chunks taken in a random order while they fit
    `budget` tokens, in original order, each run of dropped chunks one
    placeholder line (like LongCodeZip's coarse stage)."""
    chunks = split_code(code, "python")
    order = list(range(len(chunks)))
    random.Random(seed).shuffle(order)
    chosen, used = [], 0
    for i in order:
        n = count_tokens(chunks[i].text)
        if used + n <= budget:
            chosen.append(i)
            used += n
    text = _assemble(chunks, set(chosen))
    while chosen and count_tokens(text) > budget:  # placeholders cost tokens too
        chosen.pop()
        text = _assemble(chunks, set(chosen))
    return text


def _assemble(chunks, chosen: set[int]) -> str:
    out, previous_dropped = [], False
    for i, chunk in enumerate(chunks):
        if i in chosen:
            out.append(chunk.text)
            previous_dropped = False
        elif not previous_dropped:
            out.append(placeholder_line(indentation(chunk.text), "python"))
            previous_dropped = True
    return "".join(out)
