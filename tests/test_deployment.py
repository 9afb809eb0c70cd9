"""A real Prefect server on 127.0.0.1 and a served deployment whose schedule
fires within the test; the scheduled flow run writes its rows to DuckDB."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import excerpt

from pipelines.store import Store

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture()
def prefect_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_UI_ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        _stop(server)
        pytest.fail("Prefect server did not start:\n" + (tmp_path / "server.log").read_text()[-2000:])
    yield env
    _stop(server)


def _serve_until_a_scheduled_run_completes(prefect_server: dict, tmp_path, corpus, db: str) -> None:
    # Every 5 s: a cron schedule fires at the next minute, half a minute's wait on average (that serve
    # passes a cron schedule on is test_evaluate's test_serve_schedules_the_corpus_deployment_as_asked)
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", str(corpus), "--interval", "5", "--method", "extractive",
         "--summary-words", "40", "--db", db],
        env=prefect_server, cwd=tmp_path, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    completed = []
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
            deadline = time.time() + 300
            while time.time() < deadline and serve.poll() is None and not completed:
                time.sleep(2)
                with get_client(sync_client=True) as client:
                    deployments = {d.name: d for d in client.read_deployments()}
                    if "nightly-evaluation" not in deployments:
                        continue
                    runs = client.read_flow_runs()
                completed = [r for r in runs
                             if r.deployment_id == deployments["nightly-evaluation"].id and r.state and r.state.is_completed()]
        log = (tmp_path / "serve.log").read_text()
        assert serve.poll() is None, "serve exited:\n" + log[-3000:]
        assert completed, "no scheduled run completed:\n" + log[-3000:]
        assert {"nightly-evaluation", "on-demand"} <= set(deployments)
    finally:
        _stop(serve)


def _story_folder(tmp_path, scandal_text):
    corpus = tmp_path / "nightly"
    corpus.mkdir()
    (corpus / "story.txt").write_text(excerpt(scandal_text, 600), encoding="utf-8")
    return corpus


def test_scheduled_deployment_runs_and_writes_duckdb(prefect_server, tmp_path, scandal_text):
    db = tmp_path / "nightly.duckdb"
    _serve_until_a_scheduled_run_completes(prefect_server, tmp_path, _story_folder(tmp_path, scandal_text), str(db))
    store = Store(db)
    assert store.execute("SELECT count(*) FROM runs WHERE status = 'ok'")[0][0] >= 1
    assert store.execute("SELECT count(*) FROM summaries WHERE is_final")[0][0] >= 1


def test_a_served_deployment_writes_a_lake(prefect_server, tmp_path, scandal_text):
    """`summarize serve --db ducklake:postgres:...`: the scheduled run writes the lake (issue 23)."""
    from lakes import conninfo, create_database, drop_database, require_lake

    require_lake()
    database = create_database()
    try:
        lake = conninfo(database)
        prefect_server = {**prefect_server, "LONGSUM_DATA_PATH": str(tmp_path / "lake-data")}
        _serve_until_a_scheduled_run_completes(prefect_server, tmp_path, _story_folder(tmp_path, scandal_text), lake)
        store = Store(lake, read_only=True)
        assert store.execute("SELECT count(*) FROM runs WHERE status = 'ok'")[0][0] >= 1
        assert store.execute("SELECT count(*) FROM summaries WHERE is_final")[0][0] >= 1
    finally:
        drop_database(database)
