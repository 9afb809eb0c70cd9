"""llama-cpp-python's OpenAI-compatible server with the embedded model, for
tests and benchmarks: started in a subprocess on a free loopback port, loaded
the way the llamacpp backend loads the model (without AMX weight repacking,
which crashes this build on CPUs with AMX: see pipelines.llm.llamacpp)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from typing import Iterator

LAUNCHER = ("import sys\nfrom pipelines.llm.llamacpp import _without_amx_repacking\n"
            "from llama_cpp.server.__main__ import main\nsys.argv[0] = 'llama_cpp.server'\n"
            "with _without_amx_repacking():\n    main()\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(n_ctx: int = 4096, alias: str = "gemma-270m", startup_s: float = 180,
                 model: str = "gemma-3-270m") -> Iterator[str]:
    """Yields the server's base URL (http://127.0.0.1:PORT/v1) serving an
    embedded model by name (the chat template: Gemma's named, else the GGUF's own)."""
    import httpx

    from pipelines.llm.llamacpp import model_file

    path, known = model_file(model)
    chat_format = ["--chat_format", known.chat_format] if known is not None and known.chat_format else []
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "--model", str(path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), *chat_format, "--model_alias", alias],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + startup_s
        while True:
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the llama-cpp-python server did not start")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
