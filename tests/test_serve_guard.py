"""Deployment parameters are untrusted input (issue 24, item 4).

`summarize serve` states what its flow runs may read, call and write
(flows.guard). Flow runs are created through the Prefect API against the
served deployments with one hostile parameter each, and executed by
Prefect's engine: each fails with the parameter named, and nothing was read
(the document and corpus loaders never called), sent (neither the evil
server nor the Dask address contacted) or written (no file at the hostile
path). A legitimate run of each flow still completes. One hostile run and
one legitimate run also go through Prefect's Runner, in a flow-run process
of its own that inherits the policy from the serving process."""

import asyncio
import json
import socket
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import excerpt
from fake_openai_server import FakeOpenAIServer

from pipelines.store import Store

pytestmark = pytest.mark.slow

SECRET = "The launch code is 0000, and nobody outside may read it."


@pytest.fixture(scope="module")
def served(tmp_path_factory, scandal_text, prefect_harness):
    """The allowed world (documents, a server, a folder to write), the world
    outside it, the deployments applied to the API, and the servers."""
    from flows.deploy import build_deployments, serve_policy

    base = tmp_path_factory.mktemp("guard")
    docs, out, outside = base / "docs", base / "out", base / "outside"
    for folder in (docs, out, outside):
        folder.mkdir()
    (docs / "story.txt").write_text(excerpt(scandal_text, 300), encoding="utf-8")
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (outside / "model.gguf").write_text("not a model", encoding="utf-8")
    (docs / "linked").mkdir()
    (docs / "linked" / "link.txt").symlink_to(outside / "secret.txt")
    with FakeOpenAIServer() as allowed, FakeOpenAIServer() as evil, socket.socket() as dask:
        dask.bind(("127.0.0.1", 0))
        dask.listen(8)
        dask.setblocking(False)
        configs = [{"method": "hierarchical", "model": "openai:fake", "base_url": allowed.base_url,
                    "chunk_size": 256, "summary_words": 40}]
        db = out / "served.duckdb"
        deployments = build_deployments(str(docs), interval=3600, configs=configs, db=str(db))
        policy = serve_policy(str(docs), configs, str(db))
        ids = {d.name: d.apply() for d in deployments}
        yield dict(docs=docs, out=out, outside=outside, db=db, allowed=allowed, evil=evil, dask=dask,
                   policy=policy, ids=ids, deployments=deployments)


@pytest.fixture()
def loaders(monkeypatch, served):
    """Spies on the flows' document and corpus loaders, the policy installed."""
    import flows.evaluate_flow
    import flows.summarize_flow
    from flows.guard import POLICY_ENV

    monkeypatch.setenv(POLICY_ENV, json.dumps(asdict(served["policy"])))
    calls = []
    for module, name in ((flows.summarize_flow, "load_document"), (flows.evaluate_flow, "load_corpus")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.append((_name, a)) or _real(*a, **k))
    return calls


def run_deployment(served, deployment: str, parameters: dict):
    """Create a flow run through the API and let Prefect's engine execute it;
    the run as the API then holds it."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from flows.evaluate_flow import evaluate_corpus
    from flows.summarize_flow import summarize_document_flow

    flow = {"on-demand": summarize_document_flow, "nightly-evaluation": evaluate_corpus}[deployment]
    with get_client(sync_client=True) as client:
        created = client.create_flow_run_from_deployment(served["ids"][deployment], parameters=parameters)
    run_flow(flow, flow_run=created, parameters=created.parameters, return_type="state")
    with get_client(sync_client=True) as client:
        return client.read_flow_run(created.id)


def hostile_cases(served) -> list[tuple[str, str, dict, str, Path | None]]:
    """(deployment, what it tries, parameters, parameter named in the refusal, path that must stay unwritten)."""
    docs, outside, evil = served["docs"], served["outside"], served["evil"].base_url
    story = str(docs / "story.txt")
    return [
        ("on-demand", "read a file outside the roots", {"path": "/etc/passwd"}, "parameter path", None),
        ("on-demand", "read through ..", {"path": str(docs / ".." / "outside" / "secret.txt")}, "parameter path", None),
        ("on-demand", "read through a symlink", {"path": str(docs / "linked" / "link.txt")},
         "parameter path", None),
        ("on-demand", "send to another server", {"path": story, "model": "openai:fake", "base_url": evil},
         "parameter base_url", None),
        ("on-demand", "send to the provider (not configured)", {"path": story, "model": "openai:gpt-4o-mini"},
         "parameter model (no base URL: https://api.openai.com/v1)", None),
        ("on-demand", "load a model file outside the roots",
         {"path": story, "model": f"llamacpp:{outside / 'model.gguf'}"}, "parameter model", None),
        ("on-demand", "write a database outside the folder",
         {"path": story, "method": "extractive", "db": str(outside / "x.duckdb")}, "parameter db",
         outside / "x.duckdb"),
        ("on-demand", "send to another Dask scheduler",
         {"path": story, "method": "extractive", "dask_address": f"tcp://127.0.0.1:{served['dask'].getsockname()[1]}"},
         "parameter dask_address", None),
        ("nightly-evaluation", "read a folder outside the roots", {"source": str(outside)}, "parameter source", None),
        ("nightly-evaluation", "read a folder with a link out", {"source": str(docs / "linked")},
         "parameter source holds 'link.txt'", None),
        ("nightly-evaluation", "send a corpus to another server",
         {"configs": [{"method": "hierarchical", "model": "openai:fake", "base_url": evil}]},
         "parameter configs[0].base_url", None),
        ("nightly-evaluation", "export outside the folder", {"export_dir": str(outside / "export")},
         "parameter export_dir", outside / "export"),
        ("nightly-evaluation", "write a report outside the folder", {"report": str(outside / "r.html")},
         "parameter report", outside / "r.html"),
        ("nightly-evaluation", "write a database outside the folder", {"db": str(outside / "c.duckdb")},
         "parameter db", outside / "c.duckdb"),
    ]


def test_every_hostile_parameter_is_refused_before_anything_happens(served, loaders):
    matrix = []
    for deployment, attempt, parameters, named, unwritten in hostile_cases(served):
        before = (len(served["allowed"].requests), len(served["evil"].requests))
        run = run_deployment(served, deployment, parameters)
        contacted = _accepted(served["dask"])
        matrix.append(f"{deployment:20} {attempt:40} -> {run.state.name}: {(run.state.message or '')[:150]}")
        assert run.state.is_failed(), (attempt, run.state)
        assert named in run.state.message and "refused before reading, sending or writing" in run.state.message
        assert loaders == [], (attempt, loaders)  # nothing read
        assert (len(served["allowed"].requests), len(served["evil"].requests)) == before  # nothing sent
        assert not contacted
        assert unwritten is None or not unwritten.exists()  # nothing written
    assert not list(served["outside"].glob("*.duckdb"))
    print("\n".join(matrix))


def test_legitimate_runs_still_work(served, loaders):
    story = served["docs"] / "story.txt"
    run = run_deployment(served, "on-demand", {"path": str(story), "model": "openai:fake",
                                                  "base_url": served["allowed"].base_url, "chunk_size": 256,
                                                  "summary_words": 40})
    assert run.state.is_completed(), run.state
    assert served["allowed"].requests  # it called the allowed server
    run = run_deployment(served, "nightly-evaluation", {"configs": [{"method": "extractive",
                                                                        "summary_words": 40}]})
    assert run.state.is_completed(), run.state
    assert [name for name, _ in loaders] == ["load_document", "load_corpus"]
    assert Store(served["db"]).execute("SELECT count(*) FROM runs WHERE status = 'ok'")[0][0] == 2


def test_a_served_flow_run_process_inherits_the_policy(served, monkeypatch):
    """Through Prefect's Runner (as `serve` runs them): the flow run's own
    process gets the policy from the serving process's environment."""
    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    from flows.guard import POLICY_ENV

    monkeypatch.setenv(POLICY_ENV, json.dumps(asdict(served["policy"])))
    created = {}
    with get_client(sync_client=True) as client:
        for name, parameters in (("hostile", {"path": "/etc/passwd"}),
                                 ("legitimate", {"path": str(served["docs"] / "story.txt"), "method": "extractive"})):
            created[name] = client.create_flow_run_from_deployment(served["ids"]["on-demand"], parameters=parameters)

    async def serve_once():
        runner = Runner(name="guard")
        await runner.aadd_deployment([d for d in served["deployments"] if d.name == "on-demand"][0])
        await runner.start(run_once=True)

    asyncio.run(serve_once())
    with get_client(sync_client=True) as client:
        outcomes = {name: client.read_flow_run(run.id).state for name, run in created.items()}
    assert outcomes["hostile"].is_failed() and "parameter path" in outcomes["hostile"].message, outcomes["hostile"]
    assert outcomes["legitimate"].is_completed(), outcomes["legitimate"]


def _accepted(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def test_the_default_lake_is_served_and_its_password_stays_out(tmp_path, monkeypatch, cli_env):
    """LONGSUM_DB naming a lake with a password: runs that pass no `db` write that lake (not refused),
    another lake is refused, and `summarize db-path` shows the lake without the password."""
    import os
    import subprocess

    from flows.deploy import serve_policy
    from flows.guard import ParameterRefused

    lake = "ducklake:postgres:host=/var/run/postgresql dbname=served password=s3cret-pw"
    monkeypatch.setenv("LONGSUM_DB", lake)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    policy = serve_policy(str(tmp_path), [{"method": "extractive"}])
    policy.check("evaluate-corpus", {"source": str(tmp_path)})
    policy.check("evaluate-corpus", {"source": str(tmp_path), "db": lake})
    with pytest.raises(ParameterRefused):
        policy.check("evaluate-corpus", {"source": str(tmp_path), "db": "ducklake:postgres:dbname=other"})
    shown = subprocess.run(["summarize", "db-path"], env={**cli_env, "LONGSUM_DB": lake}, capture_output=True,
                           text=True)
    assert shown.returncode == 0 and "dbname=served" in shown.stdout
    assert "s3cret-pw" not in shown.stdout + shown.stderr
    assert os.environ.get("PGPASSWORD") == "s3cret-pw"  # where the password went


def test_a_lake_is_served_as_its_spec_with_only_a_secret_blocks_name(tmp_path, monkeypatch):
    """`summarize serve --db ducklake:... --db-password-secret BLOCK`: both deployments write the
    lake (its spec, not a path made of it, and no password), name the Secret block that holds
    the password, and keep to the policy served beside them."""
    from flows.deploy import serving

    monkeypatch.delenv("PGPASSWORD", raising=False)
    lake = "ducklake:postgres:dbname=served host=/var/run/postgresql"
    deployments, policy = serving(str(tmp_path), [{"method": "extractive"}], db=f"{lake} password=s3cret-pw",
                                  cron="0 2 * * *", db_password_secret="longsum-lake-password")
    for deployment in deployments:
        assert deployment.parameters["db"] == lake, deployment.parameters
        assert deployment.parameters["db_password_secret"] == "longsum-lake-password"
        assert "s3cret-pw" not in json.dumps(deployment.parameters)
        policy.check(deployment.name, deployment.parameters)
