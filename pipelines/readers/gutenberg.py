"""Project Gutenberg's header and licence, cut from a book's text.

Gutenberg texts (plain, HTML or EPUB) open with a header that ends at a
`*** START OF THE PROJECT GUTENBERG EBOOK ... ***` line and close with an
`*** END OF ... ***` line followed by the licence (about 3,000 words that
would otherwise be summarized as part of the book). Older files end their
header with `*END*THE SMALL PRINT!...` and mark the end with `End of (the)
Project Gutenberg's ...`. Only the text between the markers is kept; a
"Produced by ..." credit right after the start marker goes too.
"""

from __future__ import annotations

import re

_START = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*?\*{3}"
    r"|\*END\*THE SMALL PRINT![^\n]*)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*"
    r"|End of (?:the )?Project Gutenberg(?:'s|\u2019s)? (?:E-?(?:BOOK|TEXT)|Etext)?[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
_CREDIT = re.compile(  # used with .match(text, pos): anchored at pos
    r"\s*(?:Produced by|Transcribed (?:from|by)|E-?text prepared by|This e-?(?:book|text) was produced by)"
    r"[^\n]*(?:\n[^\n]+)*\n\s*\n",
    re.IGNORECASE,
)
_EBOOK_NUMBER = re.compile(r"\[E-?(?:Book|Text) #(\d+)\]", re.IGNORECASE)


def strip_gutenberg(text: str) -> tuple[str, dict | None]:
    """The text between the markers, and what was cut (None when the text has
    no Gutenberg markers and is returned unchanged).

    Returns (text, {"header_chars", "footer_chars", "start_offset", "end_offset", "ebook"});
    the kept text is input[start_offset:end_offset], so offsets found before
    the cut can be moved."""
    start = _START.search(text)
    if start is None:
        return text, None
    end = _END.search(text, start.end())
    body_start = start.end()
    credit = _CREDIT.match(text, body_start)
    if credit:
        body_start = credit.end()
    body_end = end.start() if end else len(text)
    # leading and trailing blank lines belong to the cut
    while body_start < body_end and text[body_start] in " \t\n":
        body_start += 1
    while body_end > body_start and text[body_end - 1] in " \t\n":
        body_end -= 1
    # a line such as "End of the Project Gutenberg EBook of X" can sit just before the *** END marker
    tail = re.search(r"\n[ \t]*End of (?:the )?Project Gutenberg[^\n]*\Z", text[body_start:body_end], re.IGNORECASE)
    if tail:
        body_end = body_start + tail.start()
        while body_end > body_start and text[body_end - 1] in " \t\n":
            body_end -= 1
    info = {
        "header_chars": body_start, "footer_chars": len(text) - body_end, "start_offset": body_start,
        "end_offset": body_end, "ebook": ebook_number(text[:start.start()]),
    }
    return text[body_start:body_end] + "\n", info


def ebook_number(header: str) -> int | None:
    """The Gutenberg eBook number a header names ("[EBook #1342]"), if any."""
    match = _EBOOK_NUMBER.search(header)
    return int(match.group(1)) if match else None
