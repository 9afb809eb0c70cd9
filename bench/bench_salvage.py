"""What a degraded run's output draws from, old salvage against new (issue 27 item 1).

A stand-in backend that always answers invalidly (it copies the prompt back,
as the embedded Gemma 270M does, so every attempt is degenerate) forces
every step of a default hierarchical run to its salvage. The old salvage
(the input's leading sentences, from a `git worktree` of the revision before
the change) and the new one (an extractive selection over all of the step's
input) run on the same document text (this tree's reader, as a paper) in
child processes. Each sentence of the final summary is located in the
document; the table gives the deciles of the document (by character
position) and the sections they fall in, and what the chunk salvages kept of
their chunks.

    .venv/bin/python bench/bench_salvage.py                     # tests/data/documents/acl/acl2017.pdf
    .venv/bin/python bench/bench_salvage.py --method incremental --chunk-size 1024 --document paper.pdf --old <rev>

The stand-in counts tokens with cl100k and has the embedded model's 8,192-token
context; the run's settings are RunConfig's defaults (hierarchical) unless
`--method`, `--chunk-size` or `--summary-words` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_extractive import locate, old_revision, run_child, worktree  # noqa: E402
from benchlib import LOCAL, ROOT, table  # noqa: E402

OLD_MARK = ("pipelines/summarize/common.py", "def lead_sentences")

CHILD = r"""
import json, sys, tempfile
tree, path, chunk_size, summary_words, method = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sys.path[:0] = [tree, tree + "/tests"]
import pipelines
from scripted import ScriptedBackend
from pipelines.llm.tokenizers import count_cl100k
from pipelines.runner import RunConfig, summarize_file
from pipelines.store import Store

class StandIn(ScriptedBackend):
    def count_tokens(self, text):
        return count_cl100k(text)

def copies_the_prompt(request):
    return "\n\n".join(m["content"] for m in request.messages)

with tempfile.TemporaryDirectory() as tmp:
    store = Store(tmp + "/salvage.duckdb")
    config = RunConfig(method=method, kind="paper", chunk_size=chunk_size, summary_words=summary_words)
    result = summarize_file(path, config, store, backend=StandIn(copies_the_prompt, context_window=8192, model="prompt-echo"))
    chunks = dict(store.execute("SELECT idx, text FROM chunks WHERE run_id = ?", [result.run_id]))
    records = [{"kind": r.kind, "level": r.level, "idx": r.idx, "words": r.n_words, "degraded": r.degraded,
                "input_words": len(chunks[r.idx].split()) if r.kind == "chunk" else None,
                "input_tokens": count_cl100k(chunks[r.idx]) if r.kind == "chunk" else None,
                "note": r.note} for r in result.records]
print(json.dumps({"status": result.status, "summary": result.summary, "records": records,
                  "module": pipelines.__file__}))
"""


def describe(result: dict, text: str, sections: list) -> dict:
    spans = locate(result["summary"], text)
    deciles = sorted({min(9, int(10 * start / len(text))) for start, _ in spans})
    starts = [s.start for s in sections]
    drawn = sorted({max((i for i, s in enumerate(starts) if s <= start), default=0) for start, _ in spans})
    chunks = [r for r in result["records"] if r["kind"] == "chunk"]
    return {
        "status": result["status"], "words": len(result["summary"].split()), "located": len(spans),
        "deciles": deciles, "sections": [sections[i].title for i in drawn] if sections else [],
        "chunk_share": sum(r["words"] for r in chunks) / sum(r["input_words"] for r in chunks) if chunks else None,
        "largest_chunk": max(chunks, key=lambda r: r["input_tokens"]) if chunks else None,
        "steps": len(result["records"]), "degraded_steps": sum(r["degraded"] for r in result["records"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--document", default=str(LOCAL / "documents" / "acl" / "acl2017.pdf"))
    parser.add_argument("--old", default=None, help="the old revision (default: the last with the leading-sentences salvage)")
    parser.add_argument("--method", choices=["hierarchical", "incremental"], default="hierarchical")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--summary-words", type=int, default=None)
    args = parser.parse_args()
    from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_SUMMARY_WORDS
    from pipelines.documents import load_document

    document = load_document(args.document)
    sizes = [str(args.chunk_size or DEFAULT_CHUNK_TOKENS), str(args.summary_words or DEFAULT_SUMMARY_WORDS), args.method]
    revision = args.old or old_revision(OLD_MARK)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / (Path(args.document).stem + ".txt")
        plain.write_text(document.text, encoding="utf-8")
        with worktree(revision) as old_tree:
            old = run_child(CHILD, str(old_tree), str(plain), *sizes)
            assert old["module"].startswith(str(old_tree)), old["module"]
        new = run_child(CHILD, str(ROOT), str(plain), *sizes)
        assert new["module"].startswith(str(ROOT)), new["module"]
    print(f"{Path(args.document).name}: {len(document.text.split()):,} words, {len(document.sections)} sections; "
          f"{args.method}, chunk size {sizes[0]}, summary words {sizes[1]}; every answer a copy of the prompt\n")
    rows, described = [], {}
    for name, result in (("old (leading sentences)", old), ("new (extractive selection)", new)):
        d = described[name] = describe(result, document.text, document.sections)
        rows.append([name, d["status"], f"{d['degraded_steps']}/{d['steps']}", d["words"], d["located"],
                     f"{len(d['deciles'])}/10", " ".join(str(x) for x in d["deciles"]),
                     f"{len(d['sections'])}/{len(document.sections)}",
                     "-" if d["chunk_share"] is None else f"{d['chunk_share']:.2f}"])
    print(table(["salvage", "status", "degraded steps", "words", "sentences located", "deciles", "which",
                 "sections", "chunk salvage / chunk words"], rows))
    for name, d in described.items():
        print(f"\n{name}: sections drawn from: {', '.join(d['sections']) or '-'}")
        if d["largest_chunk"]:
            c = d["largest_chunk"]
            print(f"  largest chunk: {c['input_tokens']} tokens ({c['input_words']} words) -> {c['words']}-word salvage")
    print("\nnew summary:\n" + new["summary"])
    print("\nold summary:\n" + old["summary"][:1500])
    print(json.dumps({"old": described["old (leading sentences)"]["deciles"],
                      "new": described["new (extractive selection)"]["deciles"]}))


if __name__ == "__main__":
    main()
