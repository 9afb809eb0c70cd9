"""`summarize text FILE`: the document exactly as longsum will chunk it."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("text")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object: {"format", "title", "pages", "extractor", "sections": [{"title", "start", "end"}], "text"}.')
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None, help="Override the detected document kind.")
@click.option("--password", default=None, metavar="TEXT",
              help="Password of an encrypted PDF (or set LONGSUM_PDF_PASSWORD); used to read it, stored nowhere.")
def text_command(file, as_json, kind, password) -> None:
    """Print FILE's text as longsum reads it: PDF, EPUB and HTML extracted, page
    furniture and Gutenberg boilerplate removed. Offsets in --json index this text."""
    from pipelines.documents import load_document

    document = load_document(file, kind=kind, password=password)
    if not as_json:
        click.echo(document.text, nl=not document.text.endswith("\n"))
        return
    starts = sorted({s.start for s in document.sections}) + [len(document.text)]
    following = {start: nxt for start, nxt in zip(starts, starts[1:])}
    sections = [
        {"title": s.title, "start": s.start, "end": following.get(s.start, len(document.text)), "level": s.level,
         "kind": s.kind}
        for s in document.sections
    ]
    click.echo(json.dumps({
        "path": document.path, "format": document.format, "kind": document.kind, "title": document.title,
        "pages": document.pages, "extractor": document.extractor, "extractor_version": document.extractor_version,
        "encoding": document.encoding, "doc_id": document.doc_id, "n_chars": len(document.text),
        "metadata": document.metadata, "sections": sections, "text": document.text,
    }, ensure_ascii=False))
