"""A small OpenAI-compatible server for tests and benchmarks.

It answers `/v1/chat/completions` after a fixed delay with a deterministic,
well-formed summary (the first sentences of the prompt's last fenced block,
within the word budget the prompt asks for), so pipelines run end to end
without a model. It counts requests in flight, and can inject faults, one
per request, from a script: "429" (with Retry-After), "500", "401", "hang" (longer
than any client timeout), "drop" (close the connection), "malformed" (not
JSON), "empty" (an empty completion).

Like vLLM it can enforce a context window with a tokenizer of its own
(`count_tokens`, `context_window`: a request whose prompt plus max_tokens does
not fit gets HTTP 400) and offer `/tokenize` (`tokenize=True`); `prefix` marks
its answers, so two servers serving one model name answer differently.

    python tests/fake_openai_server.py --port 8089 --delay 0.5
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORDS = re.compile(r"at most (\d+) words")
_FENCED = re.compile(r"<(?:excerpt|summaries|summary|text)>\n(.*?)\n</", re.S)


def scripted_answer(messages: list[dict]) -> str:
    content = messages[-1]["content"] if messages else ""
    budget = int(_WORDS.findall(content)[-1]) if _WORDS.findall(content) else 40
    blocks = _FENCED.findall(content)
    words = (blocks[-1] if blocks else content).split()[: max(3, budget - 4)]
    words = [w.strip(".!?\"'`") for w in words if w.strip(".!?\"'`")] or ["Nothing"]
    sentences = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


class FakeOpenAIServer:
    def __init__(self, delay: float = 0.0, faults: list[str | None] | None = None, port: int = 0, hang_s: float = 30.0,
                 prefix: str = "", count_tokens=None, context_window: int | None = None, tokenize: bool = False,
                 answer=None):
        self.delay = delay
        self.answer = answer  # messages -> text (None: the scripted summary), e.g. capable_answers.capable_answer
        self.prefix = prefix
        self.count_tokens = count_tokens
        self.context_window = context_window
        self.tokenize = tokenize
        self.rejected: list[str] = []  # context-window errors sent
        self.tokenize_calls = 0
        self.hang_s = hang_s
        self.faults = deque(faults or [])
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "longsum"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/").endswith("/tokenize"):
                    self._tokenize(body)
                    return
                fault = server.next_fault()
                with server._lock:
                    server.requests.append({"body": body, "fault": fault, "at": time.time()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self._in_flight = True
                try:
                    self._respond(body, fault)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) or we dropped it on purpose
                finally:
                    self._answered()

            def _answered(self) -> None:
                """No longer in flight: called before the answer is written, since the
                client may send its next request as soon as it has read it."""
                if getattr(self, "_in_flight", False):
                    self._in_flight = False
                    with server._lock:
                        server.in_flight -= 1

            def _tokenize(self, body: dict) -> None:
                # vLLM's shape; anything else (llama.cpp's {"content"}) is a 400, as vLLM answers it
                if not server.tokenize or server.count_tokens is None:
                    self._json(404, {"detail": "Not Found"})
                elif "prompt" not in body:
                    self._json(400, {"object": "error", "message": "prompt: Field required"})
                else:
                    with server._lock:
                        server.tokenize_calls += 1
                    n = server.count_tokens(body["prompt"])
                    self._json(200, {"count": n, "max_model_len": server.context_window, "tokens": list(range(n))})

            def _too_long(self, body: dict) -> str | None:
                if server.count_tokens is None or server.context_window is None:
                    return None
                # each message's content plus a few template tokens, as a chat template adds
                prompt = sum(server.count_tokens(str(m.get("content", ""))) + 4 for m in body.get("messages", []))
                answer = body.get("max_tokens") or body.get("max_completion_tokens") or 0
                if prompt + answer <= server.context_window:
                    return None
                return (f"This model's maximum context length is {server.context_window} tokens. However, you requested "
                        f"{prompt + answer} tokens ({prompt} in the messages, {answer} in the completion).")

            def _respond(self, body: dict, fault: str | None) -> None:
                time.sleep(server.delay)
                too_long = self._too_long(body)
                if too_long:
                    with server._lock:
                        server.rejected.append(too_long)
                    self._json(400, {"object": "error", "message": too_long, "type": "BadRequestError", "code": 400})
                elif fault == "429":
                    self._json(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"retry-after": "0.1"})
                elif fault == "500":
                    self._json(500, {"error": {"message": "internal error"}})
                elif fault == "401":
                    self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                elif fault == "hang":
                    time.sleep(server.hang_s)
                    self._json(200, self._completion(body, ""))
                elif fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif fault == "malformed":
                    payload = b'{"id": "x", "choices": [ {"message": '
                    self._answered()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                elif fault == "empty":
                    self._json(200, self._completion(body, ""))
                else:
                    messages = body.get("messages", [])
                    text = server.answer(messages) if server.answer else None
                    self._json(200, self._completion(body, server.prefix + (text if text is not None else scripted_answer(messages))))

            def _completion(self, body: dict, text: str) -> dict:
                limit = body.get("max_tokens") or body.get("max_completion_tokens") or 256
                words = text.split()
                finish = "stop"
                if len(words) > limit:
                    text, finish = " ".join(words[:limit]), "length"
                prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                return {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
                              "total_tokens": prompt + len(text.split())},
                }

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self._answered()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    with FakeOpenAIServer(delay=args.delay, port=args.port) as server:
        print(f"serving on {server.base_url} (delay {args.delay} s); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
