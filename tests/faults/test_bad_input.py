"""Bad input: one clear line on stderr, a non-zero exit, no traceback, and
nothing half-written in the database. Inputs that must work, work."""

import gzip
import json
import subprocess
import sys

import pytest
from clitools import assert_one_line_error, run
from conftest import BOOKS, excerpt

from pipelines.integrity import verify
from pipelines.plan import plan_file
from pipelines.store import Store


@pytest.fixture()
def db(tmp_path):
    return tmp_path / "faults.duckdb"


def _rows(db, table="runs") -> int:
    return Store(db).execute(f"SELECT count(*) FROM {table}")[0][0] if db.exists() else 0


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such file"),
        ("DIR", "is a directory"),
        (b"", "empty"),
        (b"   \n\n\t  \r\n", "only whitespace"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "PNG image"),
        (gzip.compress(b"a compressed story " * 200, mtime=0), "gzip archive"),
        (bytes(range(256)) * 40, "binary"),
    ],
)
def test_unusable_files_fail_cleanly_and_write_nothing(tmp_path, cli_env, db, content, fragment):
    path = tmp_path / "input.txt"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    assert_one_line_error(run([path, "--db", db, "-q"], cli_env), fragment)
    assert _rows(db) == 0


def _bad_documents(tmp_path) -> dict:
    """Files that look like documents longsum reads but cannot be used."""
    import zipfile

    from conftest import DATA

    fixtures = DATA / "documents"
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes((fixtures / "two_column.pdf").read_bytes()[:3000])
    container = ('<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                 'version="1.0"><rootfiles><rootfile full-path="c.opf"/></rootfiles></container>')
    manifest = '<manifest><item id="a" href="a.xhtml" media-type="application/xhtml+xml"/></manifest>'
    opf = '<package xmlns="http://www.idpf.org/2007/opf">' + manifest + "{spine}</package>"
    no_spine, bomb = tmp_path / "nospine.epub", tmp_path / "bomb.epub"
    for path, spine in ((no_spine, ""), (bomb, '<spine><itemref idref="a"/></spine>')):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("mimetype", "application/epub+zip")
            archive.writestr("META-INF/container.xml", container)
            archive.writestr("c.opf", opf.format(spine=spine))
            with archive.open("a.xhtml", "w", force_zip64=True) as member:
                block = b" " * 2**20
                for _ in range(1 if path is no_spine else 100):
                    member.write(block)
    # a password-protected EPUB: every entry flagged encrypted, as zip -e writes them
    locked = tmp_path / "locked.epub"
    data = bytearray((fixtures / "scandal_epub2.epub").read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            data[found + flags_at] |= 0x1
            start = found + 4
    locked.write_bytes(bytes(data))
    import random

    junk_html, junk_epub = tmp_path / "junk.html", tmp_path / "junk.epub"
    junk_html.write_bytes(random.Random(5).randbytes(20_000))
    junk_epub.write_bytes(random.Random(6).randbytes(20_000))
    return {
        "password epub": (locked, "password-protected"),
        "binary html": (junk_html, "not HTML"),
        "junk epub": (junk_epub, "not a readable EPUB"),
        "encrypted": (fixtures / "encrypted.pdf", "encrypted"),
        "scanned": (fixtures / "scanned.pdf", "no text layer; OCR is not supported"),
        "truncated": (truncated, "not a readable PDF"),
        "zip bomb": (bomb, "zip bomb"),
        "no spine": (no_spine, "no spine"),
    }


@pytest.mark.parametrize("case", ["encrypted", "scanned", "truncated", "zip bomb", "no spine", "password epub",
                                  "binary html", "junk epub"])
def test_unusable_documents_fail_cleanly_and_write_nothing(tmp_path, cli_env, db, case):
    path, fragment = _bad_documents(tmp_path)[case]
    # the one line names the file and the problem
    assert_one_line_error(run([path, "--method", "extractive", "--db", db, "-q"], cli_env), str(path), fragment)
    assert _rows(db) == 0 and _rows(db, "documents") == 0
    assert_one_line_error(run(["chunks", path], cli_env), fragment)


def _summarize(path, server, db, env, *extra):
    return run([path, "--model", "openai:fake", "--base-url", server.base_url, "--chunk-size", "256",
                "--summary-words", "60", "--db", db, "--json", "-q", *extra], env)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, encoding, text",
    [
        ("latin1.txt", "latin-1", "Le caf\u00e9 \u00e9tait plein. Fran\u00e7ois y lisait un roman \u00e0 la fen\u00eatre.\n\n" * 60),
        ("win1252.txt", "cp1252", "\u201cWell,\u201d said Holmes \u2014 smiling \u2014 \u201cit\u2019s odd.\u201d\n\n" * 80),
        ("utf16.txt", "utf-16", "Watson wrote it down. Holmes said nothing at all.\n\n" * 80),
        ("russian.txt", "utf-8", "\u0425\u043e\u043b\u043c\u0441 \u0441\u043c\u043e\u0442\u0440\u0435\u043b \u0432 \u043e\u043a\u043d\u043e. \u0423\u0442\u0440\u043e \u0431\u044b\u043b\u043e \u0442\u0438\u0445\u0438\u043c.\n\n" * 80),
        ("chinese.txt", "utf-8", "\u798f\u5c14\u6469\u65af\u5750\u5728\u7a97\u8fb9\u3002\u90a3\u5929\u65e9\u6668\u5f88\u5b89\u9759\u3002\n\n" * 120),
    ],
)
def test_legacy_encodings_and_other_scripts_work(tmp_path, cli_env, db, fake_openai, name, encoding, text):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    result = _summarize(path, fake_openai, db, cli_env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # "degraded": the test server's answers can overrun token budgets in scripts cl100k splits finely
    assert out["status"] in ("ok", "degraded") and out["summary"]
    assert text.split()[0][:2] in out["summary"]  # the document's own script came through decoding intact
    # the model saw decoded text, never mojibake or a BOM
    first_prompt = fake_openai.requests[0]["body"]["messages"][-1]["content"]
    assert text.split()[0] in first_prompt and "\ufeff" not in first_prompt
    assert verify(Store(db)) == []


@pytest.mark.slow
def test_one_long_line_without_punctuation_chunks(tmp_path, cli_env, db, fake_openai):
    path = tmp_path / "line.txt"
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 4000)[:200_000]
    path.write_text(words)
    plan = run(["chunks", path, "--chunk-size", "512", "--method", "hierarchical"], cli_env)
    assert plan.returncode == 0, plan.stderr
    assert "200,000 characters" in plan.stdout
    result = _summarize(path, fake_openai, db, cli_env, "--chunk-size", "2048")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_chunks"] >= 20


@pytest.mark.slow
def test_fifty_megabyte_text_chunks_in_bounded_memory(tmp_path, cli_env, books):
    novel = (books / "austen_prideprejudice.txt").read_bytes()
    path = tmp_path / "huge.txt"
    with path.open("wb") as fh:
        while fh.tell() < 50 * 1024 * 1024:
            fh.write(novel)
    size = path.stat().st_size
    # A fresh wrapper process whose only child is the command: its RUSAGE_CHILDREN peak is that
    # command's own (this test process's would be the largest of every child it ever ran).
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)\n"
               "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    # one method's preflight: the chunks are what is measured (the incremental plan adds minutes, not memory)
    result = subprocess.run([sys.executable, "-c", wrapper, "summarize", "chunks", str(path), "--model", "openai:any",
                             "--chunk-size", "8192", "--method", "hierarchical"], capture_output=True, text=True,
                            env=cli_env, timeout=900)
    assert result.returncode == 0, result.stderr
    assert f"{size:,} characters" in result.stdout
    peak = int(result.stderr.rsplit("PEAK_KIB", 1)[1].split()[0]) * 1024
    # measured 313 MiB for the 50 MiB file (6.3x: the text, its chunks, their token counts)
    assert peak < 8 * size, f"peak RSS {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"

    # The same plan in this process: the chunks are the whole text, in order, each within its budget.
    plan = plan_file(path, model="openai:any", chunk_size=8192)
    text = plan.document.text
    assert f"{len(plan.chunks)} chunks of at most 8192 tokens" in result.stdout
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == len(text)
    for left, right in zip(plan.chunks, plan.chunks[1:]):
        assert left.end == right.start
    assert all(chunk.text == text[chunk.start:chunk.end] and chunk.n_tokens <= 8192 for chunk in plan.chunks)
    assert "".join(chunk.text for chunk in plan.chunks) == text


@pytest.mark.slow
def test_unreachable_base_url_fails_the_run_with_its_reason(tmp_path, cli_env, db):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    story = tmp_path / "story.txt"
    story.write_text(excerpt((BOOKS / "doyle_scandal_in_bohemia.txt").read_text(), 300))
    result = run([story, "--model", "openai:any", "--base-url", f"http://127.0.0.1:{port}/v1", "--retries", "1",
                  "--timeout", "2", "--db", db, "-q"], cli_env)
    assert_one_line_error(result, "cannot connect")
    ((status, error),) = Store(db).execute("SELECT status, error FROM runs")
    assert status == "failed" and "cannot connect" in error
    assert verify(Store(db)) == []


def test_read_only_database_path(cli_env, unprivileged):
    story = BOOKS / "doyle_scandal_in_bohemia.txt"
    assert_one_line_error(run([story, "--method", "extractive", "--db", "/proc/longsum.duckdb", "-q"], cli_env), "/proc/longsum.duckdb")
    prefix, base = unprivileged
    folder = base / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    env = {**cli_env, "HOME": str(base), "XDG_CACHE_HOME": str(base / "cache"), "LONGSUM_HOME": str(base / "home")}
    result = subprocess.run([*prefix, "summarize", str(story), "--method", "extractive", "--db", str(folder / "x.duckdb"),
                             "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(result, "not writable")
    assert not (folder / "x.duckdb").exists()


def test_database_that_is_not_duckdb(tmp_path, cli_env):
    bogus = tmp_path / "notes.duckdb"
    bogus.write_text("this is not a database\n" * 100)
    story = BOOKS / "doyle_scandal_in_bohemia.txt"
    assert_one_line_error(run([story, "--method", "extractive", "--db", bogus, "-q"], cli_env), "not a DuckDB database")
    assert bogus.read_text().startswith("this is not a database")  # left untouched


@pytest.mark.slow
def test_bad_model_specs_and_missing_keys(cli_env, db):
    story = BOOKS / "doyle_scandal_in_bohemia.txt"
    assert_one_line_error(run([story, "--model", "gpt-4", "--db", db], cli_env), "unknown model spec")
    assert_one_line_error(run([story, "--model", "openai:gpt-4o-mini", "--db", db], cli_env), "OPENAI_API_KEY is not set")
    assert_one_line_error(run([story, "--model", "anthropic:claude-3-5-haiku-latest", "--db", db], cli_env), "ANTHROPIC_API_KEY")
    assert_one_line_error(run([story, "--model", "llamacpp:/nowhere/m.gguf", "--db", db], cli_env), "model file not found")
    assert_one_line_error(run([story, "--chunk-size", "7900", "--db", db, "-q"], cli_env), "context")
    assert _rows(db) == 0
