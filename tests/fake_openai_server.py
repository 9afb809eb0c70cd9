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
its answers, so two servers serving one model name answer differently. With
a tokenizer, `usage` counts in it (else in words).

`flaky=Flaky(reset=0.15, unavailable=0.05, seed=7)` makes it an unreliable
server: that share of requests (chat, `/tokenize`, and the Batch API's
uploads, polls and downloads alike) is read and then either dropped with a
TCP reset and no answer, or answered 503. Whether a request fails is drawn
from the seed, the request (method, path, body) and how many times that same
request came before, so a run meets the same faults whatever the order its
threads send them in. `injected` lists the faults sent; `requests` holds
only the chat requests that got through. The server also counts the
connections open at once (`max_open_connections`).

It also speaks the Batch API as the OpenAI SDK uses it: `POST /v1/files`
(multipart upload), `POST /v1/batches`, `GET /v1/batches/{id}` and
`GET /v1/files/{id}/content`. A batch is answered line by line as the chat
endpoint would answer, once `batch_polls` retrievals have seen it in progress
(`hold_batches` keeps every batch in progress until released);
`expire_next_batch=N` makes the next batch expire with only its first N
requests answered (the rest in the error file as `batch_expired`).

    python tests/fake_openai_server.py --port 8089 --delay 0.5
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORDS = re.compile(r"at most (\d+) words")
_FENCED = re.compile(r"<(?:excerpt|summaries|summary|text)>\n(.*?)\n</", re.S)


def scripted_answer(messages: list[dict], share: float = 1.0) -> str:
    content = messages[-1]["content"] if messages else ""
    budget = int(_WORDS.findall(content)[-1]) if _WORDS.findall(content) else 40
    blocks = _FENCED.findall(content)
    words = (blocks[-1] if blocks else content).split()[: max(3, round(budget * share) - 4)]
    words = [w.strip(".!?\"'`") for w in words if w.strip(".!?\"'`")] or ["Nothing"]
    sentences = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def concise_answer(messages: list[dict]) -> str:
    """The scripted summary in 60 % of the words asked: it fits its step's token budget at the
    first attempt. The scripted one, 38 words of the stories' prose for 42 asked, is over the
    step's 64 tokens by the client's count, so most steps are asked again, shorter."""
    return scripted_answer(messages, share=0.6)


@dataclass(frozen=True)
class Flaky:
    """Faults drawn per request: `reset` of them dropped without an answer
    (TCP RST), `unavailable` answered 503."""

    reset: float = 0.15
    unavailable: float = 0.05
    seed: int = 7
    # paths (prefixes) whose first request is always reset: the draw's keys hold random ids and
    # multipart boundaries, so the few batch requests of a small run may all escape it
    first_reset: tuple[str, ...] = ()

    def draw(self, key: str, occurrence: int) -> str | None:
        x = random.Random(f"{self.seed}|{key}|{occurrence}").random()
        if x < self.reset:
            return "reset"
        if x < self.reset + self.unavailable:
            return "503"
        return None


def byte_level_string(piece: bytes) -> str:
    """A token's bytes as a byte-level BPE vocabulary (GPT-2's, Llama 3's, Qwen's) writes them:
    printable Latin-1 bytes as themselves, every other byte as a character from 256 up."""
    return "".join(_BYTE_LEVEL[b] for b in piece)


def _byte_level_map() -> dict[int, str]:
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


_BYTE_LEVEL = _byte_level_map()


class FakeOpenAIServer:
    def __init__(self, delay: float = 0.0, faults: list[str | None] | None = None, port: int = 0, hang_s: float = 30.0,
                 prefix: str = "", count_tokens=None, context_window: int | None = None, tokenize: bool = False,
                 answer=None, batch_polls: int = 1, prompt_cache_min: int | None = None, encode=None,
                 flaky: Flaky | None = None, pieces=None, tokenize_max: int | None = None):
        self.delay = delay
        # /tokenize answers with these token ids (text -> ids) instead of placeholders
        self.encode = encode
        # text -> each token's bytes: /tokenize then answers `return_token_strs` as vLLM does, with a
        # byte-level vocabulary's strings (its count is then the number of pieces)
        self.pieces = pieces
        # like vLLM, whose /tokenize refuses a text longer than the model's context
        self.tokenize_max = tokenize_max
        self.flaky = flaky
        self._seen: Counter = Counter()  # (method, path, body) -> times asked, for the fault draw
        self._first_reset_done: set[str] = set()  # Flaky.first_reset prefixes already reset once
        self.injected: list[tuple[str, str]] = []  # (fault, path) of every fault injected by `flaky`
        self.open_connections = 0
        self.max_open_connections = 0
        # Like OpenAI's automatic prompt caching: a leading system message seen
        # before (and at least this many tokens) is reported as cached_tokens.
        self.prompt_cache_min = prompt_cache_min
        self._seen_prefixes: set[str] = set()
        self.batch_polls = batch_polls
        self.hold_batches = threading.Event()  # set: batches stay in progress
        self.expire_next_batch: int | None = None
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_lines: list[dict] = []  # every request line of every batch created
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
        self._lock = threading.RLock()  # re-entered: a batch is answered under it
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

    def usage(self, body: dict, text: str) -> dict:
        if self.count_tokens is not None:
            prompt = sum(self.count_tokens(str(m.get("content", ""))) + 4 for m in body.get("messages", []))
            answer = self.count_tokens(text) if text else 0
        else:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            answer = len(text.split())
        usage = {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}
        messages = body.get("messages", [])
        if self.prompt_cache_min is not None and messages and messages[0].get("role") == "system":
            prefix = str(messages[0].get("content", ""))
            size = (self.count_tokens(prefix) if self.count_tokens else len(prefix.split())) + 4
            with self._lock:
                seen = prefix in self._seen_prefixes
                self._seen_prefixes.add(prefix)
            usage["prompt_tokens_details"] = {"cached_tokens": size if seen and size >= self.prompt_cache_min else 0}
        return usage

    def completion_body(self, body: dict, text: str, number: int) -> dict:
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 256
        words = text.split()
        finish = "stop"
        if len(words) > limit:
            text, finish = " ".join(words[:limit]), "length"
        while self.count_tokens is not None and text and self.count_tokens(text) > limit:
            text, finish = " ".join(text.split()[:-1]), "length"
        return {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": self.usage(body, text),
        }

    def answer_text(self, body: dict) -> str:
        messages = body.get("messages", [])
        text = self.answer(messages) if self.answer else None
        return self.prefix + (text if text is not None else scripted_answer(messages))

    # -- Batch API ---------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{len(self.files) + len(self.batches) + 1:06d}-{int(time.time() * 1000) % 100000}"

    def add_file(self, data: bytes) -> dict:
        with self._lock:
            file_id = self._new_id("file")
            self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": "batch", "status": "processed"}

    def create_batch(self, body: dict) -> dict | None:
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return None
        lines = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        with self._lock:
            batch_id = self._new_id("batch")
            self.batch_lines.extend(lines)
            expire, self.expire_next_batch = self.expire_next_batch, None
            self.batches[batch_id] = {
                "lines": lines, "expire": expire, "polls": 0, "status": "in_progress",
                "input_file_id": body["input_file_id"], "endpoint": body.get("endpoint"),
                "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
                "counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            }
        return self.batch_object(batch_id)

    def retrieve_batch(self, batch_id: str) -> dict | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            if batch["status"] == "in_progress" and not self.hold_batches.is_set():
                batch["polls"] += 1
                if batch["polls"] > self.batch_polls:
                    self._finish_batch(batch)
        return self.batch_object(batch_id)

    def _finish_batch(self, batch: dict) -> None:
        answered = batch["lines"] if batch["expire"] is None else batch["lines"][: batch["expire"]]
        output, errors = [], []
        for n, line in enumerate(batch["lines"]):
            custom = line["custom_id"]
            if n >= len(answered):
                errors.append({"id": f"batch_req_{n}", "custom_id": custom, "response": None,
                               "error": {"code": "batch_expired",
                                         "message": "This request could not be executed before the completion window expired."}})
                continue
            body = line["body"]
            too_long = self.too_long(body)
            if too_long:
                errors.append({"id": f"batch_req_{n}", "custom_id": custom, "error": None,
                               "response": {"status_code": 400, "request_id": f"req_{n}",
                                            "body": {"error": {"message": too_long, "type": "invalid_request_error"}}}})
                continue
            output.append({"id": f"batch_req_{n}", "custom_id": custom, "error": None,
                           "response": {"status_code": 200, "request_id": f"req_{n}",
                                        "body": self.completion_body(body, self.answer_text(body), n)}})
        for key, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                file_id = self._new_id("file")
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
                batch[key] = file_id
        batch["counts"] = {"total": len(batch["lines"]), "completed": len(output), "failed": len(errors)}
        batch["status"] = "completed" if batch["expire"] is None else "expired"

    def batch_object(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        return {
            "id": batch_id, "object": "batch", "endpoint": batch["endpoint"], "input_file_id": batch["input_file_id"],
            "completion_window": "24h", "status": batch["status"], "created_at": batch["created_at"],
            "output_file_id": batch["output_file_id"], "error_file_id": batch["error_file_id"],
            "request_counts": batch["counts"], "metadata": batch["metadata"],
        }

    def too_long(self, body: dict) -> str | None:
        if self.count_tokens is None or self.context_window is None:
            return None
        # each message's content plus a few template tokens, as a chat template adds
        prompt = sum(self.count_tokens(str(m.get("content", ""))) + 4 for m in body.get("messages", []))
        answer = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if prompt + answer <= self.context_window:
            return None
        return (f"This model's maximum context length is {self.context_window} tokens. However, you requested "
                f"{prompt + answer} tokens ({prompt} in the messages, {answer} in the completion).")

    def next_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def flaky_fault(self, method: str, path: str, raw: bytes) -> str | None:
        if self.flaky is None:
            return None
        key = f"{method} {path} {raw.decode('utf-8', 'replace')}"
        first = next((prefix for prefix in self.flaky.first_reset if path.startswith(prefix)), None)
        with self._lock:
            self._seen[key] += 1
            occurrence = self._seen[key]
            forced = first is not None and first not in self._first_reset_done
            if forced:
                self._first_reset_done.add(first)
        fault = "reset" if forced else self.flaky.draw(key, occurrence)
        if fault:
            with self._lock:
                self.injected.append((fault, path))
        return fault

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def setup(self) -> None:
                super().setup()
                # answer at once on a kept-alive connection (headers and body are separate
                # writes: without this, Nagle's algorithm holds the body for the client's delayed ACK)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with server._lock:
                    server.open_connections += 1
                    server.max_open_connections = max(server.max_open_connections, server.open_connections)

            def finish(self) -> None:
                with server._lock:
                    server.open_connections -= 1
                try:
                    super().finish()
                except OSError:
                    pass  # a connection reset on purpose

            def _injected(self, method: str, path: str, raw: bytes) -> bool:
                """Drop (TCP reset, no answer) or refuse (503) this request if the flaky draw says so."""
                fault = server.flaky_fault(method, path, raw)
                if fault == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return True
                if fault == "503":
                    self._json(503, {"error": {"message": "the server is overloaded (injected)", "type": "server_error"}})
                    return True
                return False

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if self._injected("GET", path, b""):
                    return
                match = re.search(r"/batches/([^/]+)$", path)
                if match:
                    batch = server.retrieve_batch(match.group(1))
                    self._json(200, batch) if batch else self._json(404, {"error": {"message": "no such batch"}})
                    return
                match = re.search(r"/files/([^/]+)/content$", path)
                if match:
                    data = server.files.get(match.group(1))
                    if data is None:
                        self._json(404, {"error": {"message": "no such file"}})
                        return
                    self.send_response(200)
                    self.send_header("content-type", "application/octet-stream")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "longsum"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0].rstrip("/")
                if self._injected("POST", path, raw):
                    return
                if path.endswith("/files"):
                    self._json(200, server.add_file(_multipart_file(self.headers.get("content-type", ""), raw)))
                    return
                if path.endswith("/batches"):
                    batch = server.create_batch(json.loads(raw or b"{}"))
                    self._json(200, batch) if batch else self._json(404, {"error": {"message": "no such input file"}})
                    return
                body = json.loads(raw or b"{}")
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
                    pieces = server.pieces(body["prompt"]) if server.pieces else None
                    n = len(pieces) if pieces is not None else server.count_tokens(body["prompt"])
                    if server.tokenize_max is not None and n > server.tokenize_max:
                        self._json(400, {"object": "error", "type": "BadRequestError", "code": 400, "message":
                                         f"This model's maximum context length is {server.tokenize_max} tokens. "
                                         f"However, you requested {n} tokens in the messages."})
                        return
                    ids = list(server.encode(body["prompt"])) if server.encode else list(range(n))
                    answer = {"count": n, "max_model_len": server.context_window, "tokens": ids}
                    if body.get("return_token_strs") and pieces is not None:
                        answer["token_strs"] = [byte_level_string(piece) for piece in pieces]
                    self._json(200, answer)

            def _too_long(self, body: dict) -> str | None:
                return server.too_long(body)

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
                    self._json(200, self._completion(body, server.answer_text(body)))

            def _completion(self, body: dict, text: str) -> dict:
                return server.completion_body(body, text, len(server.requests))

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


def _multipart_file(content_type: str, raw: bytes) -> bytes:
    """The `file` part of a multipart/form-data upload (the SDK's files.create)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(b"content-type: " + content_type.encode() + b"\r\n\r\n" + raw)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    return b""


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
