"""llama.cpp backend (llama-cpp-python), with the packaged models (`embedded`).

One `Llama` per (model file, context size) per process: loading costs seconds
and hundreds of MB. llama.cpp contexts are not thread-safe, so every use of a
model goes through its lock, and every computation runs on one thread of the
process (`on_compute_thread`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pipelines.llm.embedded as embedded
from pipelines.llm.base import Completion, CompletionRequest, LLMCallError, LLMConfigError

DEFAULT_CONTEXT_WINDOW = 8192
TINY_MODEL_NOTICE = (
    "Gemma 3 270M is a tiny *base* model: it exercises the whole pipeline offline but cannot "
    "write good summaries or judge them. The embedded default (llamacpp) is Qwen2.5-Coder-1.5B-Instruct."
)

_MODELS: dict[tuple, tuple] = {}
_MODELS_LOCK = threading.Lock()


def default_local_model() -> str | None:
    """The model part of the default spec when it is a llama.cpp one ($LONGSUM_MODEL
    may name the tiny model), else None: the embedded default."""
    from pipelines.defaults import DEFAULT_MODEL

    backend, _, model = DEFAULT_MODEL.partition(":")
    return model or None if backend.strip().lower() == "llamacpp" else None


def model_file(model: str | None) -> tuple[Path, embedded.EmbeddedModel | None]:
    """The GGUF file a `llamacpp[:MODEL]` spec names: an embedded model by
    name (None: the default), else a path."""
    named = None if model is not None and ("/" in model or model.endswith(".gguf")) else embedded.lookup(model)
    if named is not None:
        return embedded.model_path(named), named
    path = Path(model).expanduser()
    if not path.is_file():
        known = ", ".join(embedded.EMBEDDED)
        raise LLMConfigError(f"model file not found: {path} (embedded models: {known})")
    return path, embedded.for_path(path)


def _file_fingerprint(path: Path) -> str:
    """Cheap identity of a model file: size plus hashes of its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


_LOG_CALLBACK = None


@atexit.register
def _close_models() -> None:
    """Free models while the interpreter is intact (Llama.__del__ at teardown
    finds llama.cpp's bindings already gone and prints a traceback)."""
    with _MODELS_LOCK:
        for llama, _ in _MODELS.values():
            with contextlib.suppress(Exception):
                llama.close()
        _MODELS.clear()


def _silence_llama_logs() -> None:
    """llama.cpp logs to stderr from C even with verbose=False; keep stderr for our progress."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None or os.environ.get("LONGSUM_LLAMA_LOGS"):
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _drop(level, text, user_data):  # noqa: ARG001
        return None

    _LOG_CALLBACK = _drop  # keep a reference: C holds only the pointer
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class _ComputeThread:
    """Runs every llama.cpp computation of the process on one thread.

    ggml parallelizes with OpenMP, and libgomp keeps a team of worker threads
    per thread that has started a parallel region; those workers spin for a
    while between regions. Once one thread has driven the model, the same
    model driven from another thread shares the cores with that idle team:
    measured here (2 cores), 24 ms per generated token from the thread that
    loaded it vs 39 ms from any other — what a Prefect task or a worker pool
    would see. Calls are serialized under the model's lock anyway, so handing
    them to one thread costs nothing. A daemon thread: an interrupted caller
    does not keep the process alive until a generation ends."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, fn, /, *args, **kwargs):
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llama.cpp", daemon=True)
                self._thread.start()
        future: Future = Future()
        self._queue.put((future, fn, args, kwargs))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


on_compute_thread = _ComputeThread().run


@contextlib.contextmanager
def _without_amx_repacking():
    """Load weights without llama.cpp's extra (repacked) buffer types when the
    build uses Intel AMX: its AMX matmul segfaults on the first decode of the
    embedded model (llama-cpp-python 0.3.36 built natively on a Xeon with AMX,
    in ggml_backend_amx_mul_mat). LONGSUM_LLAMA_EXTRA_BUFTS=1 keeps them."""
    from llama_cpp import llama_cpp as lib  # the module Llama() reads its defaults from

    if os.environ.get("LONGSUM_LLAMA_EXTRA_BUFTS") == "1" or b"AMX_INT8 = 1" not in lib.llama_print_system_info():
        yield
        return
    default_params = lib.llama_model_default_params

    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p

    # Llama() builds its model params from this function and offers no argument for the field.
    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default_params


def load_llama(path: Path, n_ctx: int, logits_all: bool = False, vocab_only: bool = False):
    """The process-wide Llama for this file and context size, and its lock.

    `vocab_only` loads just the tokenizer (milliseconds): enough to count
    tokens and to replay a fully cached run without loading the weights."""
    key = (str(path), n_ctx, logits_all, vocab_only)
    with _MODELS_LOCK:
        if key not in _MODELS:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise LLMConfigError("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
            _silence_llama_logs()
            threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
            # last_n_tokens_size: a repeat penalty (a retry after a degenerate answer) looks back over
            # the whole answer, not llama.cpp's default 64 tokens. The embedded model's loops repeat
            # paragraphs of about 70 tokens, just out of a 64-token window's sight (the demo story's fifth
            # chunk looped in all three attempts on an AMX Xeon). The sampler counts only answer tokens.
            try:
                with _without_amx_repacking():
                    llama = Llama(
                        model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_batch=512,
                        chat_format=_chat_format(path), last_n_tokens_size=n_ctx,
                        logits_all=logits_all, vocab_only=vocab_only, verbose=False, seed=0,
                    )
            except (ValueError, RuntimeError) as exc:
                raise LLMConfigError(f"could not load model {path.name}: {exc}") from None
            _MODELS[key] = (llama, threading.Lock())
        return _MODELS[key]


def _chat_format(path: Path) -> str | None:
    known = embedded.for_path(path)
    return known.chat_format if known is not None else None


class LlamaCppBackend:
    backend = "llamacpp"
    # One loaded model per process answers under its lock: steps run side by side would only
    # take turns, and interleaved they would evict each other's prompt from the KV cache.
    parallel_calls = 1

    def __init__(self, model_path: str | Path | None = None, context_window: int | None = None, reuse_prefix: bool = True):
        path, known = model_file(None if model_path is None else str(model_path))
        self.path = path
        self.embedded = known
        self.model = known.name if known is not None else path.stem
        self.context_window = context_window or DEFAULT_CONTEXT_WINDOW
        # A smaller window only tightens the budgets; the loaded context never
        # shrinks below the default, so backends of one file share one model.
        self._n_ctx = max(self.context_window, DEFAULT_CONTEXT_WINDOW)
        self.reuse_prefix = reuse_prefix
        self._fingerprint = _file_fingerprint(path)
        self._vocab, self._vocab_lock = load_llama(path, self._n_ctx, vocab_only=True)
        # Gemma's chat template has no system role: fold it into the user turn.
        self._fold_system = known is not None and known.fold_system_prompt

    @property
    def _loaded(self):
        """The full model and its lock, loaded on the first generation."""
        return load_llama(self.path, self._n_ctx)

    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model, "file": self._fingerprint}

    def describe(self) -> dict:
        return {"backend": self.backend, "model": self.model, "path": str(self.path), "context_window": self.context_window}

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenize(text))

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        with self._vocab_lock:
            return self._vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)

    def _messages(self, messages) -> list[dict]:
        messages = [dict(m) for m in messages]
        if self._fold_system and messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"]
            if messages and messages[0]["role"] == "user":
                messages[0]["content"] = f"{system}\n\n{messages[0]['content']}"
            else:
                messages.insert(0, {"role": "user", "content": system})
        return messages

    def complete(self, request: CompletionRequest) -> Completion:
        llama, lock = self._loaded
        with lock:
            if not self.reuse_prefix:
                llama.reset()
            evaluated_before = _prompt_tokens_evaluated(llama)
            watcher = _StopWhenDegenerate(llama, request.watch) if request.watch is not None else None
            started = time.perf_counter()
            try:
                result = on_compute_thread(
                    llama.create_chat_completion,
                    messages=self._messages(request.messages),
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    seed=request.seed,
                    stop=list(request.stop) or None,
                    repeat_penalty=1.0 + request.repeat_penalty,
                    logits_processor=[watcher] if watcher is not None else None,
                )
            except ValueError as exc:  # e.g. "Requested tokens exceed context window"
                raise LLMCallError(f"llama.cpp: {exc}") from None
            latency = time.perf_counter() - started
            evaluated_after = _prompt_tokens_evaluated(llama)
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            input_tokens=prompt_tokens,
            output_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason="degenerate" if watcher is not None and watcher.reason else choice.get("finish_reason") or "stop",
            latency_s=latency,
            cached_input_tokens=_reused(prompt_tokens, evaluated_before, evaluated_after),
        )


class _StopWhenDegenerate:
    """A logits processor that ends generation once `watch` finds the answer so
    far degenerate: from then on only end-of-sequence may be sampled.

    create_chat_completion takes no stopping criteria (its chat handlers drop
    them) but passes logits processors through; forcing end-of-sequence keeps
    llama.cpp's own bookkeeping (usage, finish, KV state) intact. The processor
    sees every token id evaluated so far; the answer is what follows the
    prompt, i.e. the ids after those it saw on its first call."""

    def __init__(self, llama, watch):
        self.llama = llama
        self.watch = watch
        self.every = max(1, int(getattr(watch, "every_tokens", 8)))
        self.reason: str | None = None
        self._start: int | None = None
        self._end = llama.token_eos()

    def __call__(self, input_ids, scores):
        if self._start is None:
            self._start = len(input_ids)
        made = len(input_ids) - self._start
        if self.reason is None and made and made % self.every == 0:
            answer = self.llama.detokenize(list(input_ids[self._start:])).decode("utf-8", errors="ignore")
            self.reason = self.watch(answer)
        if self.reason is not None:
            scores.fill(float("-inf"))
            scores[self._end] = 0.0
        return scores


def _prompt_tokens_evaluated(llama) -> int | None:
    """llama.cpp's running count of prompt tokens it actually evaluated."""
    try:
        import llama_cpp

        return int(llama_cpp.llama_perf_context(llama._ctx.ctx).n_p_eval)
    except Exception:  # perf counters are optional in some builds
        return None


def _reused(prompt_tokens: int, evaluated_before: int | None, evaluated_after: int | None) -> int:
    """Prompt tokens served from the KV cache instead of evaluated."""
    if evaluated_before is None or evaluated_after is None:
        return 0
    return max(0, prompt_tokens - (evaluated_after - evaluated_before))
