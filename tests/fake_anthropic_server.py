"""A small Anthropic-compatible server for tests: the Messages API and the
Message Batches API as the official SDK calls them.

`POST /v1/messages` answers at once; `POST /v1/messages/batches` takes a
batch, which is `in_progress` for the first `batch_polls` retrievals
(`GET /v1/messages/batches/{id}`) and then `ended`, its results streamed as
JSON lines from `GET /v1/messages/batches/{id}/results` (the batch's
`results_url`). Answers are the OpenAI test server's deterministic summaries
(`scripted_answer`), so both providers give the same text for one prompt.
`error_next=N` makes the next batch's request number N come back `errored`;
`expire_next_batch=N` makes every request of the next batch after its first N come back `expired`.
Every request's headers are kept (`headers`, names in lower case) so tests can check what was sent.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_openai_server import scripted_answer

ISO_TIME = "2026-12-02T00:00:00Z"


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def message(params: dict, number: int) -> dict:
    """The message the Messages API would answer to these request params."""
    text = scripted_answer([{"role": m["role"], "content": _text(m["content"])} for m in params["messages"]])
    prompt_words = sum(len(_text(m["content"]).split()) for m in params["messages"])
    prompt_words += len(_text(params.get("system") or "").split())
    return {
        "id": f"msg_{number:06d}", "type": "message", "role": "assistant", "model": params["model"],
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": prompt_words, "output_tokens": len(text.split()),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


class FakeAnthropicServer:
    def __init__(self, batch_polls: int = 1):
        self.batch_polls = batch_polls
        self.error_next: int | None = None
        self.expire_next_batch: int | None = None
        self.messages: list[dict] = []  # params of every synchronous request
        self.batch_requests: list[dict] = []  # every {"custom_id", "params"} of every batch
        self.batches: dict[str, dict] = {}
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "FakeAnthropicServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def create_batch(self, body: dict) -> dict:
        with self._lock:
            batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
            errored, self.error_next = self.error_next, None
            expire, self.expire_next_batch = self.expire_next_batch, None
            self.batch_requests.extend(body["requests"])
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0, "errored": errored, "expire": expire,
                                      "results": None}
        return self.batch_object(batch_id)

    def retrieve_batch(self, batch_id: str) -> dict | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            batch["polls"] += 1
            if batch["results"] is None and batch["polls"] > self.batch_polls:
                batch["results"] = [self._result(n, item, batch["errored"], batch["expire"])
                                    for n, item in enumerate(batch["requests"])]
        return self.batch_object(batch_id)

    def _result(self, n: int, item: dict, errored: int | None, expire: int | None) -> dict:
        if expire is not None and n >= expire:
            result = {"type": "expired"}
        elif n == errored:
            result = {"type": "errored", "error": {"type": "error", "error": {
                "type": "invalid_request_error", "message": "max_tokens: too large for this model"}}}
        else:
            result = {"type": "succeeded", "message": message(item["params"], len(self.batch_requests) + n)}
        return {"custom_id": item["custom_id"], "result": result}

    def batch_object(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        results = batch["results"]
        errored = sum(r["result"]["type"] == "errored" for r in results or [])
        expired = sum(r["result"]["type"] == "expired" for r in results or [])
        return {
            "id": batch_id, "type": "message_batch",
            "processing_status": "ended" if results is not None else "in_progress",
            "request_counts": {"processing": 0 if results is not None else len(batch["requests"]),
                               "succeeded": len(results or []) - errored - expired, "errored": errored,
                               "canceled": 0, "expired": expired},
            "created_at": ISO_TIME, "expires_at": ISO_TIME, "archived_at": None, "cancel_initiated_at": None,
            "ended_at": ISO_TIME if results is not None else None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results" if results is not None else None,
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def do_GET(self) -> None:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                path = self.path.split("?")[0].rstrip("/")
                match = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
                batch = server.retrieve_batch(match.group(1)) if match else None
                if batch is None:
                    self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}})
                elif match.group(2):
                    lines = server.batches[match.group(1)]["results"] or []
                    self._send(200, "".join(json.dumps(line) + "\n" for line in lines), "application/binary")
                else:
                    self._send(200, batch)

            def do_POST(self) -> None:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/messages/batches":
                    self._send(200, server.create_batch(body))
                elif path == "/v1/messages":
                    with server._lock:
                        server.messages.append(body)
                        number = len(server.messages)
                    self._send(200, message(body, number))
                else:
                    self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

            def _send(self, status: int, payload, content_type: str = "application/json") -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
