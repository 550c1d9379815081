"""Request bodies: media type, content coding, size, and strict JSON decoding.

Whatever a client gets wrong about a body answers 4xx, never 5xx (a 5xx would
count as a server fault in the release analysis):

- 415 when `Content-Type` is missing or not JSON (`application/json` or
  `application/<name>+json`; a `charset`, if given, must be UTF-8), or when
  `Content-Encoding` is not `identity`, `gzip` or `deflate`;
- 413 when the body is over APP_MAX_BODY_BYTES, as sent or decompressed;
- 400 when a compressed body is broken or truncated, when the body is not
  UTF-8 or not JSON (RFC 8259: `NaN` and `Infinity` are not JSON), nests
  deeper than MAX_DEPTH, holds a number that a 64-bit float cannot hold, or a
  string with a lone surrogate escape (`"\\ud800"`).

The server runs with aiohttp's own decompression off (`service.SERVER_OPTIONS`)
so that a broken gzip or deflate body reaches this module and gets a JSON 400,
instead of a plain-text 400 from aiohttp's parser that no metric counts.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from aiohttp import web

MAX_DEPTH = 32
ENCODINGS = ("identity", "gzip", "deflate")
_MAX_INT_DIGITS = 308  # 10**308 is still a finite float; Python refuses past 4,300
# A JSON string (possessive, so an unterminated one is scanned once) or a bracket.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


class BadBody(Exception):
    """The request's body (or what its headers say about it) is unusable."""

    def __init__(
        self, status: int, message: str, field: str = "body", headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}
        super().__init__(message)


def check_headers(request: web.Request, limit: int) -> None:
    """Refuse a body by its headers alone, before reading it."""
    if request.content_length is not None and request.content_length > limit:
        raise BadBody(413, f"body larger than {limit} bytes")
    raw_type = request.headers.get("Content-Type")
    media = request.content_type.lower()
    charset = (request.charset or "utf-8").lower()
    if raw_type is None or not _is_json(media) or charset not in ("utf-8", "utf8"):
        raise BadBody(
            415,
            f"Content-Type must be application/json (UTF-8), not {raw_type!r}",
            field="Content-Type",
            headers={"Accept-Post": "application/json"},
        )
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ENCODINGS:
        raise BadBody(
            415,
            f"Content-Encoding must be one of {', '.join(ENCODINGS)}",
            field="Content-Encoding",
            headers={"Accept-Encoding": "gzip, deflate"},
        )


def _is_json(media: str) -> bool:
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def read_json(request: web.Request, limit: int) -> Any:
    """Check the headers, read at most `limit` bytes and decode them; raise BadBody."""
    check_headers(request, limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadBody(413, f"body larger than {limit} bytes") from None
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return decode(decompress(raw, coding, limit))


def decompress(raw: bytes, coding: str, limit: int) -> bytes:
    """`raw` decoded from `coding` (one of ENCODINGS), never more than `limit` bytes."""
    if coding == "identity":
        return raw
    if coding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    else:  # "deflate" is the zlib format (RFC 9110); some clients send it raw
        wbits = zlib.MAX_WBITS if raw[:1] and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS
    stream = zlib.decompressobj(wbits)
    try:
        data = stream.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadBody(400, f"body is not valid {coding} data: {exc}") from None
    if len(data) > limit:
        raise BadBody(413, f"body larger than {limit} bytes once decompressed")
    if not stream.eof or stream.unused_data:
        raise BadBody(400, f"body is not one complete {coding} stream")
    return data


def decode(raw: bytes) -> Any:
    """Strict JSON from bytes (RFC 8259, UTF-8), or BadBody with status 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(400, f"body is not UTF-8 (invalid byte at offset {exc.start})") from None
    if _too_deep(text):
        raise BadBody(400, f"body is not valid JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except BadBody:
        raise
    except ValueError as exc:  # JSONDecodeError, and anything else the decoder refuses
        raise BadBody(400, f"body is not valid JSON: {exc}") from None
    if "\\u" in text:  # only an escape can make a lone surrogate; UTF-8 input cannot
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody(400, "body is not valid JSON: a string has a lone surrogate") from None
    return value


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _constant(name: str) -> Any:
    raise BadBody(400, f"body is not valid JSON: {name} is not a JSON number")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BadBody(400, f"body has a number out of range: {literal[:40]}")
    return value


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
        raise BadBody(400, f"body has a number out of range: {literal[:40]}...")
    return int(literal)
