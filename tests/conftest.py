from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
BOOKS = DATA / "books"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests run offline and quiet: no hub, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The tiny Gemma 270M is every test's default model (seconds, not minutes);
# tests of the embedded instruct model name it (`qwen` fixture, `--model llamacpp`).
TINY_MODEL = "llamacpp:gemma-3-270m"
os.environ["LONGSUM_MODEL"] = TINY_MODEL
for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "PREFECT_API_URL"):
    os.environ.pop(secret, None)
# Prefect keeps its database and cached task results here: fresh every session,
# one folder per pytest-xdist worker (each worker runs its own Prefect server).
PREFECT_TEST_HOME = ROOT / ".prefect" / "pytest" / os.environ.get("PYTEST_XDIST_WORKER", "main")
shutil.rmtree(PREFECT_TEST_HOME, ignore_errors=True)
PREFECT_TEST_HOME.mkdir(parents=True)
os.environ["PREFECT_HOME"] = str(PREFECT_TEST_HOME)

sys.path.insert(0, str(ROOT / "tests"))


def _pin_worker_to_its_cores() -> None:
    """Each pytest-xdist worker runs on its own share of the cores, and so does every
    thread and subprocess it starts. llama.cpp and torch size their thread pools from
    the cores a process may use; two workers each running a model over all the cores
    spin against each other and both run at half speed (two Gemma runs of the same
    excerpt side by side: 44.5 s unpinned, 22.5 s with one core each)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores, workers, n = sorted(os.sched_getaffinity(0)), int(count), int(worker.removeprefix("gw"))
    if workers > 1:
        # Cores dealt out in turn; with more workers than cores, workers share one core each.
        os.sched_setaffinity(0, cores[n::workers] or [cores[n % len(cores)]])


_pin_worker_to_its_cores()

# Prefect configures logging when first imported and closes every handler it
# finds; absl's (rouge-score imports absl) closes its stream, which under
# pytest is the capture file, and the session loses stderr. Configure first.
import prefect.main  # noqa: E402,F401

from textdata import excerpt  # noqa: E402,F401 (tests import it from here)


@pytest.fixture(scope="session")
def books() -> Path:
    return BOOKS


@pytest.fixture(scope="session")
def scandal_text() -> str:
    return (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def gemma():
    """The tiny embedded model, loaded once per test session."""
    from pipelines.llm import resolve

    return resolve(TINY_MODEL)


@pytest.fixture(scope="session")
def qwen():
    """The embedded default instruct model (Qwen2.5-Coder-1.5B), loaded once per test session."""
    from pipelines.llm import resolve

    return resolve("llamacpp")


@pytest.fixture(autouse=True)
def _servers_forgotten():
    """Token counts and probes are kept per server URL for the process; a test's fake
    server may get a port an earlier test's server had."""
    yield
    from pipelines.llm.tokenizers import ServerTokenizer

    ServerTokenizer.forget()


@pytest.fixture()
def store(tmp_path):
    from pipelines.store import Store

    return Store(tmp_path / "test.duckdb")


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict:
    """Environment for `summarize` subprocesses: no keys, this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LONGSUM_DB")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (it takes ~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def prefect_limits(prefect_harness):
    """For a test that sets global limits of API calls on the session's Prefect API: the limits are
    as they were after it. A limit left behind bound every later flow on this worker, and a flow
    that a test SIGKILLs holds its slots until their lease runs out (minutes): the durable corpus
    test's next run waited for slots nobody was using."""
    from prefect.client.orchestration import get_client

    from flows.limits import limit_name, read_limits, set_limit

    before = read_limits()
    yield
    with get_client(sync_client=True) as client:
        for backend, limit in read_limits().items():
            if backend not in before:
                client.delete_global_concurrency_limit_by_name(limit_name(backend))
            elif limit != before[backend]:
                set_limit(backend, before[backend])


@pytest.fixture()
def fake_openai():
    """An OpenAI-compatible server that answers instantly with deterministic summaries."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


NOBODY = 65534


@pytest.fixture()
def unprivileged(tmp_path_factory):
    """(command prefix, folder) for running a command as a user without root's
    right to write anywhere: CI runs as root, which would make read-only
    files writable and such tests vacuous. The folder is one that user can enter."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="longsum-unprivileged-"))
    folder.chmod(0o777)
    if os.geteuid() != 0:
        yield [], folder
    else:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root without setpriv (util-linux) to drop privileges")
        yield [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"], folder
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(0o777)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def index_builds(monkeypatch) -> list[int]:
    """The passage count of every source index built during the test, the process's cache of
    them (`pipelines.retrieval.source_index`) emptied first."""
    from pipelines import retrieval

    built: list[int] = []

    class CountedIndex(retrieval.SourceIndex):
        def __init__(self, passages, embed=None):
            built.append(len(passages))
            super().__init__(passages, embed)

    monkeypatch.setattr(retrieval, "SourceIndex", CountedIndex)
    retrieval.source_index.cache_clear()
    return built
