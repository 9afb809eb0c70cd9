"""Keep API keys out of everything longsum writes: DB rows, logs, errors.

Keys come from the environment, but a base URL can carry them too
(`https://user:pass@host/v1`, `?api-key=...`): `public_url` is the form of a
URL that may be stored or shown, and `redact` scrubs both shapes from any text.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LONGSUM_API_KEY")
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
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"'<>]+@")
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
    return _KEY_SHAPES.sub(MASK, text)


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
