"""Keep API keys out of everything longsum writes: DB rows, logs, errors.

Keys come from the environment, but a base URL can carry them too
(`https://user:pass@host/v1`, `?api-key=...`): `public_url` is the form of a
URL that may be stored or shown, and `redact` scrubs both shapes from any text.

Messages leave a process in two places, and both are redacted as a whole
rather than message by message: its stderr (`redacted_stderr`: click's
errors and usage, warnings, notices, tracebacks, console logs) and its log
records (`redact_log_records`: what Prefect's handlers send to its API). The
CLI and the deployment script install both; every flow module installs the
second. stdout is the data channel (a summary, SQL rows) and is left as is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import traceback
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LONGSUM_API_KEY", "PGPASSWORD")
MASK = "***"
# Shapes of provider keys and bearer tokens, redacted even when not from our env.
_KEY_SHAPES = re.compile(
    r"(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|(?i:x-api-key)[\"':\s=]+[A-Za-z0-9._\-]{8,})"
)
# Query parameters that carry credentials (Azure's api-key, Google's key, SAS sig, tokens ...).
SECRET_PARAMS = re.compile(
    r"^(?:api[-_]?key|key|x-api-key|token|access[-_]?token|auth|authorization|sig|signature|secret|"
    r"client[-_]?secret|password|passwd|pwd|code)$",
    re.IGNORECASE,
)
# libpq's keyword form (`password=x`, `password='a b'`); in a URI's query string the value ends at & or #.
CONNINFO_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|(?<=[?&]password=)[^\s&#]+|\S+)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*:/{1,2})[^/\s@\"'<>]+@")  # :/ too: a URL made a Path
_URL_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|x-api-key|token|access[-_]?token|auth|authorization|sig|signature|secret|"
    r"client[-_]?secret|password|passwd|pwd|code)=)[^&#\s\"'<>]+"
)


def redact(text: str) -> str:
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(rf"\g<1>{MASK}@", text)
    text = _URL_SECRET_PARAM.sub(rf"\g<1>{MASK}", text)
    text = CONNINFO_PASSWORD.sub(f"password={MASK}", text)
    return _KEY_SHAPES.sub(MASK, text)


def first_line(message: str) -> str:
    """An error's first line, its whitespace collapsed and its secrets masked: what a
    one-line message to the user may quote of a library's error."""
    return redact(" ".join(message.strip().splitlines()[0].split())) if message.strip() else "unknown error"


def public_url(url: str | None) -> str | None:
    """The URL without credentials: no user:password, secret query values masked,
    scheme and host lower-cased, no trailing slash. Safe to store, log and hash."""
    if not url:
        return url
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    query = urlencode(
        [(k, MASK if SECRET_PARAMS.match(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), query, ""))


def url_host(url: str | None) -> str | None:
    return urlsplit(url).hostname.lower() if url and urlsplit(url).hostname else None


class RedactingStream(io.TextIOBase):
    """A text stream that writes through `redact`, a line at a time (a URL
    split over two writes is still one line); a partial line goes out on
    flush. Everything else (isatty, fileno, encoding) is the wrapped stream's."""

    def __init__(self, stream):
        super().__init__()
        self.wrapped = stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._pending += text
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
            if cut:
                ready, self._pending = self._pending[:cut], self._pending[cut:]
                self.wrapped.write(redact(ready))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, ""
                self.wrapped.write(redact(pending))
        self.wrapped.flush()

    def close(self) -> None:  # the wrapped stream is not ours to close
        if not self.closed:
            with contextlib.suppress(Exception):
                self.flush()
        super().close()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.wrapped.isatty()

    def fileno(self) -> int:
        return self.wrapped.fileno()

    @property
    def encoding(self):  # noqa: D102 - the wrapped stream's
        return getattr(self.wrapped, "encoding", "utf-8")

    @property
    def errors(self):  # noqa: D102 - the wrapped stream's
        return getattr(self.wrapped, "errors", "strict")


@contextlib.contextmanager
def redacted_stderr():
    """sys.stderr writes through `redact` for the block (and log records are redacted)."""
    redact_log_records()
    original = sys.stderr
    stream = RedactingStream(original)
    sys.stderr = stream
    try:
        yield stream
    finally:
        with contextlib.suppress(Exception):
            stream.flush()
        if sys.stderr is stream:
            sys.stderr = original


def redact_log_records() -> None:
    """Every log record this process makes from now on carries its message,
    and its traceback, redacted: console and API log handlers (Prefect's) send
    only what `redact` leaves. Installed once per process."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "longsum_redacting", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report
            return record
        record.msg, record.args = redact(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.longsum_redacting = True
    logging.setLogRecordFactory(factory)
