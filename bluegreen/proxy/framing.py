# -*- test-case-name: tests.test_upstream,tests.test_upstream_framing -*-
"""
The grammar of an upstream HTTP/1.1 response, checked as strictly as nginx
and HAProxy check it (RFC 9112, RFC 9110).

L{bluegreen.proxy.upstream.UpstreamConnection} finds where a head or a chunk
line ends; this module says whether it is valid and what it means.  Anything
the proxy could read two ways (both C{Content-Length} and
C{Transfer-Encoding}, two different lengths, a chunk size C{int()} would take
but the RFC does not) is refused with L{BadResponse}, for the client would
get a 502 rather than a response another parser could split differently.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The longest response head accepted: the status line, the header fields
#: and the empty line, counted however the head is split across reads, and
#: together with any interim (1xx) heads before it (nginx's
#: C{proxy_buffer_size} is 4 or 8 KiB, Envoy's limit 60 KiB; 64 KiB leaves
#: room for large cookies).
MAX_HEAD = 64 * 1024

#: The most header fields (or trailer fields) a response may have, as
#: HAProxy's C{tune.http.maxhdr} (101) and nginx's own 100.
MAX_FIELDS = 100

#: The longest chunk-size line (with its extensions) or trailer line.
MAX_CHUNK_LINE = 4096

#: The most hex digits in a chunk size: 16 hex digits are 64 bits, where
#: HAProxy and llhttp refuse a size that overflows; counting digits (leading
#: zeros too) is simpler and refuses the same sizes.
MAX_CHUNK_DIGITS = 16

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)

# RFC 9110 section 5.6.4: quoted-string, with quoted-pair.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'

# RFC 9112 section 7.1.1: chunk-size [ chunk-ext ], where chunk-ext is
# *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).  Nothing
# else: no sign, no "0x", no "_", no space after a bare size.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,%d})(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*"
    % (MAX_CHUNK_DIGITS, _TOKEN, _TOKEN, _QUOTED)
)

# RFC 9112 section 4: HTTP-version SP 3DIGIT SP [ reason-phrase ].  The
# reason phrase and the space before it may be missing (nginx takes
# "HTTP/1.1 200" too); codes are 100 to 599 (RFC 9110 section 15).
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([1-5][0-9][0-9])(?: (.*))?", re.DOTALL)

# Control characters other than HTAB: never valid in a field value (RFC 9110
# section 5.5, which names CR, LF and NUL as the dangerous ones) nor in a
# reason phrase (RFC 9112 section 4).  CR and LF remain only as line ends.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Field names already seen to be tokens: most responses repeat a few dozen
# names, and a set lookup is cheaper than the pattern (bounded, so a hostile
# upstream cannot grow it without end).
_KNOWN_NAMES: set[bytes] = set()
_KNOWN_NAMES_MAX = 1000

#: Why a head with a line feed not preceded by a carriage return is refused.
BARE_LF = "bare LF in the response head (lines must end in CRLF)"


class BadResponse(Exception):
    """
    The upstream sent something that is not a valid HTTP/1.1 response.
    """


class ResponseHead(NamedTuple):
    """
    A parsed response head (a named tuple rather than an attrs class: one is
    built per response, and a tuple is built several times faster).

    @ivar code: The status code (100 to 599).
    @ivar phrase: The reason phrase (may be empty).
    @ivar headers: The header fields, in order, as the client may get them
        (a repeated C{Content-Length} once).
    @ivar length: The C{Content-Length}, or L{None}.
    @ivar chunked: C{True} if the body is chunked.
    @ivar keepAlive: C{True} if the connection may carry another request.
    """

    code: int
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    length: int | None
    chunked: bool
    keepAlive: bool


def _show(data: bytes, limit: int = 80) -> str:
    """
    Show some bytes in an error message (short, and printable).
    """
    return repr(data[:limit])


def checkControls(head: bytes) -> None:
    """
    Refuse a head (or trailer section) with a control character, or a CR or
    LF that is not part of a CRLF line end.

    @param head: The head without its final empty line.
    @raise BadResponse: If it has one.
    """
    control = _CONTROL.search(head)
    if control is not None:
        raise BadResponse(f"control character {control.group()!r} in the response head")
    lines = head.count(b"\r\n")
    if head.count(b"\n") != lines:
        raise BadResponse(BARE_LF)
    if head.count(b"\r") != lines:
        raise BadResponse("bare CR in the response head")


def parseField(line: bytes) -> tuple[bytes, bytes]:
    """
    Split one header or trailer line (already free of control characters).

    @param line: The line, without its CRLF.
    @return: The name and the value (without surrounding whitespace).
    @raise BadResponse: On a folded line, a name that is not a token, or
        whitespace before the colon (RFC 9112 section 5.1 and 5.2).
    """
    if line[:1] in (b" ", b"\t"):
        raise BadResponse(f"obsolete line folding in {_show(line)}")
    name, sep, value = line.partition(b":")
    if not sep:
        raise BadResponse(f"invalid header line {_show(line)}")
    if name not in _KNOWN_NAMES:
        if _TOKEN_RE.fullmatch(name) is None:
            raise BadResponse(f"invalid header line {_show(line)}")
        if len(_KNOWN_NAMES) < _KNOWN_NAMES_MAX:
            _KNOWN_NAMES.add(name)
    return name, value.strip(b" \t")


def parseContentLength(value: bytes, length: int | None) -> int:
    """
    Read a C{Content-Length} value (RFC 9110 section 8.6: 1*DIGIT; a list
    of identical values is taken as one).

    @param value: The field value.
    @param length: The length already read from an earlier field, if any.
    @return: The length.
    @raise BadResponse: If it is not a number, or differs from C{length}.
    """
    if value.isdigit() and value.isascii() and len(value) <= 18:
        number = int(value)
        if length is not None and number != length:
            raise BadResponse("conflicting Content-Length values")
        return number
    for item in value.split(b","):
        item = item.strip(b" \t")
        if not (item.isdigit() and item.isascii()) or len(item) > 18:
            raise BadResponse(f"invalid Content-Length {_show(value, 40)}")
        number = int(item)
        if length is not None and number != length:
            raise BadResponse("conflicting Content-Length values")
        length = number
    assert length is not None
    return length


def parseHead(head: bytes) -> ResponseHead:
    """
    Parse and check a response head.

    @param head: The status line and header lines, without the empty line
        that ends them.
    @return: What it says.
    @raise BadResponse: If it is not valid HTTP/1.1, or its framing could be
        read two ways.
    """
    checkControls(head)
    lines = head.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise BadResponse(f"invalid status line {_show(lines[0])}")
    minor, code_, phrase = status.groups()
    code = int(code_)
    if len(lines) - 1 > MAX_FIELDS:
        raise BadResponse(f"more than {MAX_FIELDS} header fields")
    http10 = minor == b"0"
    keepAlive = not http10
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    codings: list[bytes] = []
    for line in lines[1:]:
        name, value = parseField(line)
        lower = name.lower()
        if lower == b"content-length":
            first = length is None
            length = parseContentLength(value, length)
            if not first:
                # The same length again: forwarded once.
                continue
            value = b"%d" % (length,)
        elif lower == b"transfer-encoding":
            codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lower == b"connection":
            tokens = {t.strip(b" \t").lower() for t in value.split(b",")}
            if b"close" in tokens:
                keepAlive = False
            elif b"keep-alive" in tokens and http10:
                keepAlive = True
        headers.append((name, value))
    chunked = False
    if codings:
        if http10:
            # RFC 9112 section 6.1: framing faulty in an HTTP/1.0 message.
            raise BadResponse("Transfer-Encoding in an HTTP/1.0 response")
        if codings != [b"chunked"]:
            # RFC 9112 section 6.3 would read until close, but the coding
            # would then be forwarded without its name (Transfer-Encoding is
            # hop-by-hop): like nginx, only "chunked" alone is accepted.
            raise BadResponse(
                f"unsupported Transfer-Encoding {_show(b', '.join(codings), 40)}"
                " (only chunked is accepted)"
            )
        if length is not None:
            # RFC 9112 section 6.3 item 3: the classic request smuggling and
            # response splitting vector; nginx answers 502.
            raise BadResponse("both Content-Length and Transfer-Encoding")
        chunked = True
    phrase = phrase or b""
    return ResponseHead(code, phrase, headers, length, chunked, keepAlive)


def parseChunkSize(line: bytes) -> int:
    """
    Read a chunk-size line (RFC 9112 section 7.1).

    @param line: The line, without its CRLF.
    @return: The chunk size.
    @raise BadResponse: If the size is not 1 to 16 hex digits, or the
        extensions are not valid.
    """
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise BadResponse(f"invalid chunk size line {_show(line, 40)}")
    return int(match.group(1), 16)


def parseTrailerLine(line: bytes) -> None:
    """
    Check one trailer field line (trailers are then dropped).

    @param line: The line, without its CRLF.
    @raise BadResponse: If it is not a valid field line.
    """
    checkControls(line)
    parseField(line)
