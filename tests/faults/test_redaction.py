"""A credential in a URL never reaches a message (issue 24, item 2).

Messages leave longsum in one place per face, redacted as a whole: the CLI's
and the deployment script's stderr, and every log record and failed-run
message a flow sends Prefect. Each exit path that can carry a URL is taken
here with a URL holding a password: the password never shows, the masked URL
does (so the message still says where), and the exit status is the path's."""

import json
import subprocess
import sys
import textwrap

import pytest
from clitools import TRACEBACK, assert_one_line_error, run
from conftest import ROOT
from fake_openai_server import FakeOpenAIServer

PASSWORD = "S3cretPass0123"


def with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@")


def assert_redacted(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text
    assert "***@" in "".join(texts), texts  # the URL is still shown, masked


@pytest.fixture()
def story(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Holmes read the letter twice. Watson asked who had sent it. " * 30, encoding="utf-8")
    return path


def test_the_price_error_of_max_cost(story, tmp_path, cli_env):
    """`--max-cost` with a server genai-prices cannot price: a UserError naming the URL."""
    with FakeOpenAIServer(tokenize=True) as server:
        result = run([story, "--model", "openai:llama3.1", "--base-url", with_password(server.base_url),
                      "--max-cost", "1", "--db", tmp_path / "x.duckdb"], cli_env)
    line = assert_one_line_error(result, "no price for openai:llama3.1 at http://***@127.0.0.1")
    assert_redacted(line, result.stdout, result.stderr)


def test_a_connection_error(story, tmp_path, cli_env):
    result = run([story, "--model", "openai:llama3.1", "--base-url", "http://alice:S3cretPass0123@127.0.0.1:9/v1",
                  "--retries", "0", "--db", tmp_path / "x.duckdb", "-q"], cli_env)
    assert_one_line_error(result, "127.0.0.1:9")
    assert_redacted(result.stdout, result.stderr)


def test_click_usage_errors(story, cli_env):
    """click prints its own errors (the bad value quoted): through the same stderr."""
    for args in ([story, "--concurrency", f"http://alice:{PASSWORD}@host/v1"],
                 [story, "--method", f"http://alice:{PASSWORD}@host/v1"],
                 ["corpus", f"http://alice:{PASSWORD}@host/books"]):
        result = run(args, cli_env)
        assert result.returncode == 2 and "Error: " in result.stderr, result.stderr
        assert_redacted(result.stdout, result.stderr)


def test_a_missing_file_named_by_a_url(cli_env):
    result = run([f"http://alice:{PASSWORD}@host/book.txt"], cli_env)
    assert_one_line_error(result, "no such file")
    assert_redacted(result.stderr)


@pytest.mark.parametrize("how, status", [("internal", 70), ("debug", 70), ("warning", 0), ("log", 0),
                                         ("partial", 0)])
def test_internal_errors_tracebacks_warnings_and_logs(how, status, cli_env):
    """A command of the real CLI that fails unexpectedly (with and without
    LONGSUM_DEBUG's traceback), warns, logs, or writes a URL in two pieces."""
    url = f"http://alice:{PASSWORD}@host/v1"
    program = textwrap.dedent(f"""
        import logging, sys, warnings
        import click
        from pipelines import cli

        @cli.cli.command("leak")
        def leak():
            how = {how!r}
            if how in ("internal", "debug"):
                raise RuntimeError("could not reach {url}")
            if how == "warning":
                warnings.warn("slow server at {url}")
            if how == "log":
                logging.basicConfig()
                logging.getLogger("longsum").error("server %s said no", "{url}")
            if how == "partial":
                sys.stderr.write("calling http://alice:{PASSWORD[:5]}")
                sys.stderr.write("{PASSWORD[5:]}@host/v1 ...\\n")

        cli.main(["leak"])
    """)
    env = {**cli_env, **({"LONGSUM_DEBUG": "1"} if how == "debug" else {})}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert result.returncode == status, result.stderr
    assert_redacted(result.stdout, result.stderr)
    assert (TRACEBACK in result.stderr) == (how == "debug")


def test_serve_and_corpus_refuse_credentials_in_a_base_url(tmp_path, cli_env):
    for command in ("serve", "corpus"):
        args = [command, tmp_path, "--base-url", f"http://alice:{PASSWORD}@host/v1", "--model", "openai:x"]
        if command == "serve":
            args += ["--cron", "* * * * *"]
        result = run(args, cli_env)
        assert_one_line_error(result, "carries credentials")
        assert PASSWORD not in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--configs", json.dumps([{"method": "hierarchical", "model": "openai:x",
                                "base_url": f"http://alice:{PASSWORD}@host/v1"}])], "'configs' carries credentials"),
    (["--configs", json.dumps([{"base_url": f"http://host/v1?api-key={PASSWORD}"}])], "'configs' carries credentials"),
    (["--dask-address", f"tcp://alice:{PASSWORD}@host:8786"], "'dask_address' carries credentials"),
    (["--limit", f"http://alice:{PASSWORD}@host/v1"], "invalid int value: 'http://***@host/v1'"),
])
def test_the_deployment_script_refuses_credentials(tmp_path, cli_env, args, fragment):
    """`python -m flows.deploy` builds deployments whose parameters Prefect stores
    as given: a credential anywhere in them is refused before anything is
    created (no Prefect API is running here: nothing could be stored), and its
    usage errors go through the redacting stderr too."""
    result = subprocess.run([sys.executable, "-m", "flows.deploy", str(tmp_path), "--cron", "* * * * *", *args],
                            capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and PASSWORD not in result.stderr + result.stdout, result.stderr


def test_build_deployments_refuses_credentials_whoever_calls_it(tmp_path):
    from flows.deploy import CredentialsInParameters, build_deployments

    with pytest.raises(CredentialsInParameters, match="'db' carries credentials") as refused:
        build_deployments(str(tmp_path), interval=60, db=f"/data/http://alice:{PASSWORD}@host/x.duckdb")
    assert PASSWORD not in str(refused.value)


@pytest.mark.slow
def test_a_failed_flow_run_sends_prefect_no_credential(tmp_path, prefect_harness):
    """A flow that fails with a URL in its error: the caller still gets the
    error by its type; Prefect's run state, and every log, hold it masked."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter
    from prefect.logging.handlers import APILogWorker

    from flows.summarize_flow import summarize_document_flow
    from pipelines.documents import DocumentError

    with pytest.raises(DocumentError) as failed:
        summarize_document_flow(path=f"http://alice:{PASSWORD}@host/book.txt", db=str(tmp_path / "f.duckdb"))
    assert PASSWORD not in str(failed.value) and "***@host" in str(failed.value)
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="book.txt")))
        logs = client.read_logs(LogFilter())
    assert flow_run.state.is_failed() and "***@host" in flow_run.state.message
    blob = flow_run.state.message + json.dumps(flow_run.parameters) + json.dumps([log.message for log in logs])
    assert PASSWORD not in blob
    assert "***@host" in json.dumps([log.message for log in logs])  # the error was logged, masked


def test_a_catalog_password_is_masked_in_every_shape(monkeypatch):
    """One redaction for API keys and lake passwords: libpq's keyword form (quoted or
    not), a URI's user:password@ and ?password=, and PGPASSWORD's value anywhere."""
    from pipelines.secrets import first_line, redact

    monkeypatch.setenv("PGPASSWORD", "tr0ub4dor")
    assert redact("dbname=lake password=s3cret host=/run") == "dbname=lake password=*** host=/run"
    assert redact("password='a b\\' c' user=x") == "password=*** user=x"
    assert redact("postgresql://u:pw@h/db?password=x&sslmode=require") == "postgresql://***@h/db?password=***&sslmode=require"
    assert first_line("FATAL:  password tr0ub4dor\n  rejected for user") == "FATAL: password ***"
