"""The shape of the code: the CLI and the flows are faces over one library.

The import graph is read from the source (every import statement, at module
level or inside a function, since a lazy import is still a dependency)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "scoring", "flows", "prompts")
# The library: knows nothing of click, Prefect or the faces.
LIBRARY = ("pipelines", "scoring", "prompts")
FACES = ("pipelines.cli", "flows")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a.b import c` depends on the module a.b.c if there is one, else on a.b
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            # `from pipelines import cli` names a module; `from pipelines.x import f` names x
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def external_imports() -> dict[str, set[str]]:
    return {module_name(p): {i.split(".")[0] for i in imports_of(p)}
            for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def is_face(module: str) -> bool:
    return any(module == face or module.startswith(face + ".") for face in FACES)


def test_the_library_imports_neither_click_nor_prefect_nor_a_face():
    problems = []
    for module, names in external_imports().items():
        if is_face(module):
            continue
        bad = names & {"click", "click_default_group", "prefect", "prefect_dask"}
        if bad:
            problems.append(f"{module} imports {sorted(bad)}")
    for module, targets in graph().items():
        if not is_face(module):
            problems += [f"{module} imports the face {t}" for t in targets if is_face(t)]
    assert problems == []


def test_click_lives_only_in_the_cli_package():
    users = {m for m, names in external_imports().items() if names & {"click", "click_default_group"}}
    assert users and all(m.startswith("pipelines.cli") for m in users)


def test_no_import_cycles_among_longsum_modules():
    edges = graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


WORKFLOW_MODULES = ("pipelines.summarize", "pipelines.compress")


def workflow_names() -> set[str]:
    """What a copy of a workflow loop would have to call: the methods of the step
    owners (a summarizer's steps and planners, a compressor's, the generate-check-
    retry loop's), read from their source, so a new step is covered the day it is
    written. A workflow's entry (`run`), its `recipe`, dunders and the settings a
    flow reads from its configuration (`config.compress`) are not steps."""
    import dataclasses

    from pipelines.runner import RunConfig
    from pipelines.summarize.common import SummarizeSettings

    owners = {"HierarchicalSummarizer", "IncrementalSummarizer", "ChunkCompressor", "Generation", "RetryLearning"}
    names, found = set(), set()
    for module in WORKFLOW_MODULES:
        for path in (ROOT / module.replace(".", "/")).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name in owners:
                    found.add(node.name)
                    names.update(f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)))
    assert found == owners, f"step owners not found: {owners - found} (update this test)"
    settings = {f.name for cls in (RunConfig, SummarizeSettings) for f in dataclasses.fields(cls)}
    return {n for n in names if not n.startswith("__") and n not in ("run", "recipe") and n not in settings}


def test_flows_hold_no_copy_of_a_workflow_loop():
    """The merge and update loops live in pipelines/summarize (and compression's
    in pipelines/compress); flows only supply an executor. So no flow module
    imports a workflow module (the executor protocol aside), and none calls a
    step owner's method -- a step (summarize_chunk, merge, step ...), a planner,
    a helper: the step a task runs arrives as data (a recipe and a method's name)."""
    names = workflow_names()
    assert {"summarize_chunk", "merge", "merge_level", "plan_level", "context_from", "step"} <= names
    for path in (ROOT / "flows").rglob("*.py"):
        imported = [i for i in imports_of(path)
                    if i.startswith(WORKFLOW_MODULES) and not i.startswith("pipelines.summarize.executors")]
        assert imported == [], f"{path.name} imports {imported}: workflows are reached through the runner"
        # Without those imports a workflow's names are reached as attributes (`summarizer.merge(...)`);
        # a plain name (a flow's `compress` parameter) is the flow's own.
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                assert node.attr not in names, (f"{path.name}:{node.lineno} uses .{node.attr}: "
                                                "a workflow loop belongs in the library")


def test_scoring_judges_text_and_runs_no_summarizer():
    """Evaluation that summarizes sits above both: scoring never imports a
    summarizer, the runner or the harness; the harness imports both sides."""
    runs_summaries = ("pipelines.summarize", "pipelines.runner", "pipelines.evaluate", "pipelines.corpus",
                      "pipelines.batch_eval")
    edges = graph()
    problems = [f"{module} imports {t}" for module, targets in edges.items() if module.startswith("scoring")
                for t in targets if any(t == r or t.startswith(r + ".") for r in runs_summaries)]
    assert problems == []
    assert {"pipelines.runner", "scoring"} <= edges["pipelines.evaluate"]


def test_scoring_imports_neither_compression_nor_summarizing():
    """scoring/ turns a summary's text into numbers: it reaches into no
    compressor and no summarizer (a measure of compression, such as what
    compressed code retains, lives with compression in pipelines.compress)."""
    forbidden = ("pipelines.compress", "pipelines.summarize")
    edges = graph()
    scoring = [m for m in edges if m == "scoring" or m.startswith("scoring.")]
    assert len(scoring) > 1
    problems = [f"{module} imports {t}" for module in scoring for t in edges[module]
                if any(t == f or t.startswith(f + ".") for f in forbidden)]
    assert problems == []


def test_one_retrieval_below_summarizing_and_scoring():
    """Passages, embeddings and BM25 live in pipelines.retrieval, which both the citations and
    the scorers use; it imports neither side, and summarizing imports nothing from scoring/."""
    edges = graph()
    assert "pipelines.retrieval" in edges["pipelines.citations"]
    assert {"pipelines.retrieval"} <= edges["scoring.coverage"] | edges["scoring.run"]
    sides = ("scoring", "pipelines.summarize", "pipelines.citations", "pipelines.runner")
    assert [t for t in edges["pipelines.retrieval"] if t.startswith(sides)] == []
    summarizing = [m for m in edges if m.startswith(("pipelines.summarize", "pipelines.citations"))]
    assert [f"{m} imports {t}" for m in summarizing for t in edges[m] if t == "scoring" or t.startswith("scoring.")] == []
