"""A self-contained HTML report of runs and their scores, drawn from the store.

One file that opens from disk with no network: the styles are inline, the
charts are SVG rendered here by Vega-Lite (altair + vl-convert), and the
interaction (the notes on a sentence, the summary tree) is plain HTML and
CSS (`:hover`/`:focus` popovers, `<details>`), so no script runs at all.

Per run: the final summary with each sentence marked by its BooookScore
errors and faithfulness labels (hover or focus shows the judge's questions,
the claims with their evidence and the chunk it came from); the summary tree
(chunks -> levels -> final), each node expandable to its text and limits;
where the summary draws from across the document (the coverage profile,
when computed); calls, tokens, cost and time per step. Across runs: every
score per configuration (method x model x chunk size x compression) as a
table with the best values marked and the extractive baseline flagged, and a
chart. Every LLM-judged score (BooookScore, faithfulness) names its judge, and
one judged by the embedded tiny base model is marked not trustworthy with the
CLI's own line; a failed run counts as failed under its configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pipelines.llm import LLMConfigError, is_tiny_model, judge_notice_text
from pipelines.store import Store
from pipelines.summarize.extractive import MODEL_NAME as EXTRACTIVE_MODEL
from pipelines.text import split_sentences

TEMPLATES = Path(__file__).parent / "templates"
# Chunk texts are cut in the tree (summaries are shown whole): a book's
# chunks would otherwise make a report of many runs tens of megabytes.
CHUNK_PREVIEW_CHARS = 700
# The scores_wide columns a table of configurations shows, each with its name in
# the harness's tables (`summarize eval`/`corpus`, a SQL alias) and its title here.
SCORES = (
    ("rouge1_f", "rouge1", "ROUGE-1"), ("rouge2_f", "rouge2", "ROUGE-2"), ("rougeL_f", "rougeL", "ROUGE-L"),
    ("rougeLsum_f", "rougeLsum", "ROUGE-Lsum"), ("bertscore_f1", "bertscore_f1", "BERTScore F1"),
    ("booookscore", "booookscore", "BooookScore"), ("faithfulness_yes", "faithful_yes", "Faithful (Yes)"),
    ("faithfulness_supported", "faithful_supported", "Faithful (Yes+Partial)"),
    ("coverage_deciles", "coverage_deciles", "Deciles covered"),
    ("coverage_end_share", "coverage_end_share", "End-of-document share"),
)
SCORE_COLUMNS = tuple((column, title) for column, _, title in SCORES)


# The LLM-judged scores: the scores_wide column naming the judge, the metric's name in the
# tiny-judge notice (as the CLI prints it), and the report's columns it judged.
JUDGED = (
    ("booookscore_model", "BooookScore", ("BooookScore",)),
    ("faithfulness_model", "faithfulness", ("Faithful (Yes)", "Faithful (Yes+Partial)")),
)
JUDGE_OF = {name: column for column, _, names in JUDGED for name in names}


# Scores where more is not better: no "best" is marked for them (the share of
# summary sentences from the document's last tenth is a bias to look at).
UNRANKED = {"End-of-document share"}


class ReportError(ValueError):
    """Nothing to report; one line for the user."""


@dataclass
class Sentence:
    num: int
    text: str
    errors: list[str] = field(default_factory=list)  # BooookScore error types
    questions: str | None = None
    claims: list[dict] = field(default_factory=list)  # claim, label, evidence, chunks
    chunk: int | None = None  # coverage: the chunk it draws from
    decile: int | None = None
    cite: str | None = None  # its citations' marker, such as [ch. III] (see pipelines.citations)
    sources: list[dict] = field(default_factory=list)  # method, where, passage

    @property
    def marks(self) -> list[str]:
        marks = ["coherence"] if self.errors else []
        labels = {c["label"] for c in self.claims}
        if "No" in labels:
            marks.append("unfaithful")
        elif "PartialSupport" in labels:
            marks.append("partial")
        elif labels == {"Yes"}:
            marks.append("faithful")
        return marks


@dataclass
class Node:
    """A node of the summary tree: the final summary, a merge, an update, or a chunk."""

    label: str
    text: str
    facts: list[str]
    flags: list[str]
    children: list["Node"] = field(default_factory=list)


def select_runs(store: Store, run_ids: Sequence[str] = (), *, last: int | None = None, document: str | None = None,
                corpus_run: str | None = None) -> list[str]:
    """Run ids (prefixes allowed) by id, the last N, a document's title, or a corpus run
    (an evaluation's id: every run it made)."""
    found: list[str] = []
    for prefix in run_ids:
        rows = store.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY started_at", [prefix])
        if not rows:
            raise ReportError(f"no run {prefix!r} in {store.path}")
        found += [r for (r,) in rows]
    if document:
        found += [run_id for run_id, path, title in store.execute(
            "SELECT r.run_id, r.document_path, d.title FROM runs r LEFT JOIN (SELECT DISTINCT ON (doc_id) * FROM documents) d USING (doc_id) "
            "ORDER BY r.started_at") if _names_document(document, path, title)]
    if corpus_run:
        found += [r for (r,) in store.execute(
            "SELECT run_id FROM runs WHERE params->>'corpus' = ? ORDER BY started_at", [corpus_run])]
    if last:
        found += [r for (r,) in reversed(store.execute(
            "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT ?", [last]))]
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ReportError(f"no runs selected in {store.path} (give run ids, --last, --document or --corpus)")
    return unique


def _names_document(name: str, path: str | None, title: str | None) -> bool:
    """`--document NAME`: the document's title, file name or file stem, exactly
    (no wildcards: `a.txt` is not `data.txt`, `_` is a character)."""
    if title is not None and name == title:
        return True
    if not path:
        return False
    file = Path(path)
    return name in (file.name, file.stem)


def build_report(store: Store, run_ids: Sequence[str], title: str = "longsum report") -> str:
    """The report's HTML for these runs."""
    import jinja2

    with store.held():  # one connection for the report's hundreds of small queries
        runs = [_run(store, run_id) for run_id in run_ids]
        comparison = _comparison(store, run_ids)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.html.j2").render(title=title, runs=runs, comparison=comparison)


def write_report(store: Store, run_ids: Sequence[str], path: str | Path, title: str = "longsum report") -> Path:
    """Write atomically: a reader never sees half a report."""
    import os

    path = Path(path)
    text = build_report(store, run_ids, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


# -- one run -----------------------------------------------------------------


def _run(store: Store, run_id: str) -> dict:
    columns, rows = store.query(
        "SELECT r.*, d.title FROM runs r LEFT JOIN (SELECT DISTINCT ON (doc_id) * FROM documents) d USING (doc_id) WHERE r.run_id = ?", [run_id])
    run = dict(zip(columns, rows[0]))
    final = store.execute("SELECT summary_id, text FROM summaries WHERE run_id = ? AND is_final", [run_id])
    summary_id, text = final[0] if final else (None, run.get("final_summary") or "")
    sentences, judged = _sentences(store, run_id, summary_id, text or "")
    scores, judges = _scores(store, run_id)
    return {
        **run,
        "title": run.get("title") or Path(run.get("document_path") or "?").name,
        "configuration": configuration(run),
        "sentences": sentences,
        # the judges whose marks the summary carries (a legend only for them), each with its model
        "legend": {column: {"model": judges.get(column), "tiny": tiny(judges.get(column))} for column in judged},
        "tree": _tree(store, run_id),
        "steps": _steps(store, run_id),
        "coverage_chart": _coverage_chart(store, run_id),
        "scores": scores,
        "notice": tiny_notice({column: [model] for column, model in judges.items()}),
    }


def configuration(run: dict) -> str:
    """How the report names a run's configuration (method x model x chunk size x compression)."""
    if run["method"] == "extractive":
        return "extractive (baseline)"
    parts = [run["method"], run.get("model") or "?", f"chunk {run.get('chunk_size')}"]
    if run.get("compression") and run["compression"] != "none":
        parts.append(run["compression"])
    return " · ".join(str(p) for p in parts)


def _latest(store: Store, table: str, run_id: str, summary_id: str | None) -> str | None:
    """The config hash of the latest scoring of this summary in `table`."""
    rows = store.execute(
        f"SELECT arg_max(config_hash, created_at) FROM {table} WHERE run_id = ? AND summary_id IS NOT DISTINCT FROM ?",
        [run_id, summary_id])
    return rows[0][0] if rows else None


def _sentences(store: Store, run_id: str, summary_id: str | None, text: str) -> tuple[list[Sentence], list[str]]:
    """The final summary's sentences with the judges' marks, and the judges that marked it
    (their scores_wide model columns: only they get a legend)."""
    sentences = [Sentence(i, s) for i, s in enumerate(split_sentences(text), 1) if s.strip()]
    by_num = {s.num: s for s in sentences}
    judged = []
    config = _latest(store, "booookscore_annotations", run_id, summary_id)
    annotations = store.execute(
        "SELECT sentence_num, flagged, types, questions FROM booookscore_annotations WHERE run_id = ? "
        "AND summary_id IS NOT DISTINCT FROM ? AND config_hash IS NOT DISTINCT FROM ?", [run_id, summary_id, config])
    if annotations:
        judged.append("booookscore_model")
    for num, flagged, types, questions in annotations:
        if flagged and num in by_num:
            by_num[num].errors = json.loads(types) if isinstance(types, str) else list(types or [])
            by_num[num].questions = questions
    config = _latest(store, "claims", run_id, summary_id)
    claims = store.execute(
        "SELECT sentence_num, claim, label, evidence, chunk_ids FROM claims WHERE run_id = ? "
        "AND summary_id IS NOT DISTINCT FROM ? AND config_hash IS NOT DISTINCT FROM ? ORDER BY claim_num",
        [run_id, summary_id, config])
    if claims:
        judged.append("faithfulness_model")
    for num, claim, label, evidence, chunk_ids in claims:
        if num in by_num and claim:
            by_num[num].claims.append({"claim": claim, "label": label or "unjudged", "evidence": _evidence(evidence),
                                       "chunks": _ints(chunk_ids)})
    config = _latest(store, "coverage", run_id, summary_id)
    for num, chunk, decile in store.execute(
            "SELECT sentence_num, chunk_idx, decile FROM coverage WHERE run_id = ? "
            "AND summary_id IS NOT DISTINCT FROM ? AND config_hash IS NOT DISTINCT FROM ?",
            [run_id, summary_id, config]):
        if num in by_num:
            by_num[num].chunk, by_num[num].decile = chunk, decile
    _citations(store, run_id, summary_id, sentences)
    return sentences, judged


def _citations(store: Store, run_id: str, summary_id: str | None, sentences: list[Sentence]) -> None:
    """Each sentence's marker and the passages it cites (table citations), when the run was cited."""
    from pipelines.citations import marker, stored_citations

    by_idx: dict[int, list] = {}
    for citation, passage in stored_citations(store, run_id, summary_id):
        by_idx.setdefault(citation.sentence_idx, []).append((citation, passage))
    for idx, sentence in enumerate(sentences):  # citations number the non-empty sentences from 0
        cited = by_idx.get(idx)
        if cited:
            sentence.cite = marker([c for c, _ in cited])
            sentence.sources = [{"method": c.method, "where": marker([c])[1:-1], "passage": _preview(passage or "")}
                                for c, passage in cited if c.source is not None]


def _evidence(value) -> list[str]:
    value = json.loads(value) if isinstance(value, str) else value
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return [str(value)] if value else []


def _ints(value) -> list[int]:
    value = json.loads(value) if isinstance(value, str) else value
    return [int(v) for v in value or [] if str(v).lstrip("-").isdigit()]


def _tree(store: Store, run_id: str) -> list[Node]:
    """Chunks under the summaries made from them, up to the final summary."""
    chunks = store.execute("SELECT idx, n_tokens, section, text FROM chunks WHERE run_id = ? ORDER BY idx", [run_id])
    chunk_nodes = {idx: Node(f"chunk {idx}", _preview(text), [f"{n_tokens} tokens"] + ([section] if section else []), [])
                   for idx, n_tokens, section, text in chunks}
    rows = store.execute(
        "SELECT level, idx, kind, text, n_words, token_limit, word_limit, attempts, degraded, salvaged, note, "
        "first_chunk, last_chunk, is_final FROM summaries WHERE run_id = ? ORDER BY level, idx, created_at", [run_id])
    nodes = []
    for level, idx, kind, text, n_words, token_limit, word_limit, attempts, degraded, salvaged, note, first, last, final in rows:
        flags = [f for f, on in (("final", final), ("degraded", degraded), ("salvaged", salvaged)) if on]
        facts = [f"{n_words} words", f"limit {word_limit} words / {token_limit} tokens", f"{attempts} attempt(s)",
                 f"chunks {first}-{last}"] + ([note] if note else [])
        label = {"chunk": f"chunk summary {idx}", "merge": f"merge level {level} #{idx}", "update": f"update {idx}",
                 "compress": f"compression at {idx}", "extractive": "extractive summary"}.get(kind, f"{kind} {idx}")
        nodes.append(((level, kind, first, last), Node(label, text, facts, flags)))
    if not nodes:
        return list(chunk_nodes.values())
    levels = sorted({level for (level, _, _, _), _ in nodes})
    if any(kind in ("update", "compress") for (_, kind, _, _), _ in nodes) or levels == [0] and len(nodes) == 1:
        # Incremental (or a single summary): a chain, each update with the chunk it read; a single
        # summary (the extractive baseline, a one-chunk document) over every chunk it was made from.
        for (_, kind, first, last), node in nodes:
            read = [last] if kind == "update" else [] if kind == "compress" else range(first, last + 1)
            node.children += [chunk_nodes.pop(i) for i in read if i in chunk_nodes]
        chain = [node for _, node in nodes]
        return chain + list(chunk_nodes.values())
    # Hierarchical: each node's children are the nodes one level down within its chunk range.
    by_level: dict[int, list] = {}
    for key, node in nodes:
        by_level.setdefault(key[0], []).append((key, node))
    for (level, kind, first, last), node in by_level[levels[0]]:
        node.children = [chunk_nodes[i] for i in range(first, last + 1) if i in chunk_nodes]
    for below, above in zip(levels, levels[1:]):
        for (level, _, first, last), node in by_level[above]:
            node.children = [child for (lvl, _, f, l), child in by_level[below] if f >= first and l <= last]
    return [node for _, node in by_level[levels[-1]]]


def count_nodes(nodes: list[Node]) -> int:
    return sum(1 + count_nodes(n.children) for n in nodes)


def _preview(text: str) -> str:
    return text if len(text) <= CHUNK_PREVIEW_CHARS else text[:CHUNK_PREVIEW_CHARS].rstrip() + " …"


def _steps(store: Store, run_id: str) -> list[dict]:
    """Calls, tokens, cost and time per kind of step (chunk, merge, update, compress, judges ...)."""
    columns, rows = store.query(
        "SELECT regexp_extract(step, '^[a-z_]+') AS step, count(*) FILTER (NOT cached AND status = 'ok') AS calls, "
        "count(*) FILTER (cached) AS cached, count(*) FILTER (status <> 'ok') AS errors, "
        "coalesce(sum(input_tokens) FILTER (NOT cached), 0) AS input_tokens, "
        "coalesce(sum(output_tokens) FILTER (NOT cached), 0) AS output_tokens, "
        "round(coalesce(sum(cost_usd) FILTER (NOT cached), 0), 4) AS cost_usd, "
        "round(coalesce(sum(latency_s) FILTER (NOT cached), 0), 1) AS seconds "
        "FROM llm_calls WHERE run_id = ? GROUP BY 1 ORDER BY min(created_at)", [run_id])
    return [dict(zip(columns, row)) for row in rows]


def _scores(store: Store, run_id: str) -> tuple[list[dict], dict[str, str]]:
    """The run's scores (name, value, and for an LLM-judged one its judge and whether that is the
    tiny model), and the judge of each LLM-judged metric (scores_wide model column -> model)."""
    present = _wide_columns(store)
    wanted = [(c, name) for c, name in SCORE_COLUMNS if c in present]
    judge_columns = [column for column, _, _ in JUDGED if column in present]
    if not wanted:
        return [], {}
    row = store.execute(f"SELECT {', '.join([c for c, _ in wanted] + judge_columns)} FROM scores_wide "
                        "WHERE run_id = ?", [run_id])
    if not row:
        return [], {}
    values, judges = row[0][:len(wanted)], dict(zip(judge_columns, row[0][len(wanted):]))
    scores = []
    for (_, name), value in zip(wanted, values):
        if value is not None:
            judge = judges.get(JUDGE_OF.get(name))
            scores.append({"name": name, "value": value, "judges": [judge] if judge else [],
                           "tiny": tiny(judge)})
    return scores, {column: model for column, model in judges.items() if model}


def tiny(model: str | None) -> bool:
    """Judged by the embedded tiny base model (Gemma 3 270M), which cannot judge."""
    try:
        return bool(model) and is_tiny_model(model)
    except LLMConfigError:  # a backend the spec parser does not know (a test's scripted one): not the tiny model
        return False


def tiny_notice(judges: dict[str, list[str]]) -> str | None:
    """The CLI's one line about the tiny judge, for the metrics it judged here
    (judges: scores_wide model column -> the models that judged it)."""
    judged = [metric for column, metric, _ in JUDGED if any(tiny(m) for m in judges.get(column, []))]
    return judge_notice_text(judged) if judged else None


def _wide_columns(store: Store) -> set[str]:
    return {c for (c,) in store.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'scores_wide'")}


def _coverage_chart(store: Store, run_id: str) -> str | None:
    rows = store.execute(
        "SELECT decile, count(*) FROM coverage WHERE run_id = ? AND config_hash = "
        "(SELECT arg_max(config_hash, created_at) FROM coverage WHERE run_id = ?) GROUP BY 1", [run_id, run_id])
    if not rows:
        return None
    import altair as alt

    counts = dict(rows)
    data = [{"decile": f"{d * 10}-{d * 10 + 10} %", "sentences": counts.get(d, 0)} for d in range(10)]
    chart = alt.Chart(alt.Data(values=data)).mark_bar(color="#4c78a8").encode(
        x=alt.X("decile:N", sort=None, title="where in the document"),
        y=alt.Y("sentences:Q", title="summary sentences"),
    ).properties(width=420, height=140)
    return svg(chart)


# -- across runs ----------------------------------------------------------------


def _comparison(store: Store, run_ids: Sequence[str]) -> dict | None:
    present = _wide_columns(store)
    wanted = [(c, name) for c, name in SCORE_COLUMNS if c in present]
    selects = "".join(f", avg(w.{c}) AS \"{name}\"" for c, name in wanted)
    selects += "".join(f", list(DISTINCT w.{c} ORDER BY w.{c}) FILTER (w.{c} IS NOT NULL) AS {c}"
                       for c, _, _ in JUDGED if c in present)
    # A baseline run without a model (one that failed before it began, as stores before schema
    # fixes wrote it) is a run of the one baseline model: its row, counted as failed, not a second one.
    columns, rows = store.query(
        "SELECT r.method, CASE WHEN r.method = 'extractive' THEN coalesce(r.model, ?) ELSE r.model END AS model, "
        "r.chunk_size, coalesce(r.compression, 'none') AS compression, count(*) AS runs, "
        "count(*) FILTER (r.status = 'degraded') AS degraded, count(*) FILTER (r.status = 'failed') AS failed, "
        f"avg(r.seconds) AS seconds, sum(r.cost_usd) AS cost_usd{selects} "
        "FROM runs r LEFT JOIN scores_wide w USING (run_id) "
        "WHERE list_contains(?, r.run_id) GROUP BY ALL ORDER BY r.method, 2, r.chunk_size",
        [EXTRACTIVE_MODEL, list(run_ids)])
    if not rows:
        return None
    table = [dict(zip(columns, row)) for row in rows]
    metrics = [name for _, name in wanted if any(r[name] is not None for r in table)]
    for row in table:
        row["configuration"] = configuration(row)
        # a configuration none of whose runs finished is shown failed, never as the baseline
        row["all_failed"] = row["failed"] == row["runs"]
        row["baseline"] = row["method"] == "extractive" and not row["all_failed"]
        row["judges"] = {name: row.get(JUDGE_OF[name]) or [] for name in metrics if name in JUDGE_OF}
        row["tiny"] = {name: any(tiny(m) for m in models) for name, models in row["judges"].items()}
    best = {m: max(r[m] for r in table if r[m] is not None) for m in metrics if m not in UNRANKED}
    chart = None
    if metrics:
        import altair as alt

        data = [{"configuration": r["configuration"], "metric": m, "value": round(r[m], 4)}
                for r in table for m in metrics if r[m] is not None]
        chart = svg(alt.Chart(alt.Data(values=data)).mark_bar().encode(
            x=alt.X("value:Q", title=None),
            y=alt.Y("configuration:N", title=None, axis=alt.Axis(labelLimit=320)),
            color=alt.Color("configuration:N", legend=None),
            row=alt.Row("metric:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        ).properties(width=360, height=alt.Step(14)))
    notice = tiny_notice({column: [m for r in table for m in r.get(column) or []] for column, _, _ in JUDGED})
    return {"rows": table, "metrics": metrics, "best": best, "chart": chart, "notice": notice}


def svg(chart) -> str:
    """A chart as inline SVG, rendered offline by vl-convert (Vega-Lite's own renderer)."""
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())

