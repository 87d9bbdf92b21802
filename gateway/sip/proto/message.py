"""SIP messages (RFC 3261 section 7), pure: parse and serialize with limits, no sockets.

A :class:`Request` or :class:`Response` is frozen: headers are a tuple of (name, value) in
wire order with compact forms expanded to their full names (RFC 3261 section 7.3.3), values
unfolded. :func:`parse_message` takes one datagram (UDP) or one framed message
(:class:`StreamFramer` for TCP/TLS) and raises :class:`SipParseError` with a reason for
anything malformed or too large; nothing else escapes it. Header values are parsed on
demand: :func:`parse_name_addr` (From, To, Contact), :func:`parse_via`, :func:`parse_params`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace

__all__ = [
    "SipParseError",
    "Request",
    "Response",
    "Message",
    "NameAddr",
    "Via",
    "parse_message",
    "parse_name_addr",
    "parse_via",
    "parse_params",
    "split_commas",
    "StreamFramer",
    "new_branch",
    "new_tag",
    "REASONS",
    "MAX_MESSAGE_BYTES",
    "MAX_HEADERS",
]

# A SUBSCRIBE/NOTIFY with a dialog-info body for a busy line is a few KiB; UDP cannot carry
# more than 64 KiB anyway. Anything larger is refused before it is parsed.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_HEADER_LINE = 8 * 1024

_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
}
# Canonical spelling of the headers this package reads, so lookups are by one name.
_CANON = {n.lower(): n for n in (
    "Call-ID", "Contact", "Content-Length", "Content-Type", "From", "To", "Via", "CSeq",
    "Max-Forwards", "Event", "Expires", "Min-Expires", "Subscription-State", "Allow-Events",
    "Accept", "Allow", "Authorization", "WWW-Authenticate", "Proxy-Authenticate",
    "Proxy-Authorization", "Record-Route", "Route", "User-Agent", "Server", "Supported",
    "Retry-After", "Require", "Unsupported")}
_CANON["call-id"] = "Call-ID"
_CANON["cseq"] = "CSeq"

REASONS = {
    100: "Trying", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 407:
    "Proxy Authentication Required", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 513: "Message Too Large",
}

_NOT_LISTS = {"authorization", "proxy-authorization", "www-authenticate",
              "proxy-authenticate", "date", "retry-after", "subject", "user-agent", "server"}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


class SipParseError(ValueError):
    """A message that cannot be used (the reason is the text)."""


def _canon(name: str) -> str:
    low = name.strip().lower()
    if low in _COMPACT:
        return _COMPACT[low]
    return _CANON.get(low, name.strip())


@dataclass(frozen=True, slots=True)
class _Base:
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (full or compact name, any case)."""
        want = _canon(name).lower()
        for k, v in self.headers:
            if k.lower() == want:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        """Every value of a header, comma-joined lines split for list headers (Via, Contact,
        Route...; not the credentials headers, whose parameters are comma-separated)."""
        want = _canon(name).lower()
        out: list[str] = []
        for k, v in self.headers:
            if k.lower() == want:
                out.extend([v] if want in _NOT_LISTS else split_commas(v))
        return out

    def with_headers(self, *pairs: tuple[str, str], drop: tuple[str, ...] = ()):  # noqa: ANN201
        """A copy with headers `drop` removed and `pairs` appended."""
        low = {_canon(d).lower() for d in drop}
        kept = tuple((k, v) for k, v in self.headers if k.lower() not in low)
        return replace(self, headers=kept + tuple((_canon(k), v) for k, v in pairs))

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        value = (self.header("CSeq") or "").split()
        try:
            return int(value[0]), value[1].upper()
        except (IndexError, ValueError):
            return -1, ""

    def _head_and_body(self, first: str) -> bytes:
        lines = [first]
        for k, v in self.headers:
            if k.lower() != "content-length":
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(frozen=True, slots=True)
class Request(_Base):
    method: str = ""
    uri: str = ""

    def serialize(self) -> bytes:
        return self._head_and_body(f"{self.method} {self.uri} SIP/2.0")

    @property
    def branch(self) -> str:
        vias = self.header_all("Via")
        return parse_via(vias[0]).params.get("branch", "") if vias else ""


@dataclass(frozen=True, slots=True)
class Response(_Base):
    status: int = 0
    reason: str = ""

    def serialize(self) -> bytes:
        return self._head_and_body(f"SIP/2.0 {self.status} {self.reason}")

    @property
    def branch(self) -> str:
        vias = self.header_all("Via")
        return parse_via(vias[0]).params.get("branch", "") if vias else ""


Message = Request | Response


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...> (RFC 3261 7.3.1)."""
    out, cur, quote, angle, i = [], [], False, False, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and quote and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif ch == "<" and not quote:
            angle = True
        elif ch == ">" and not quote:
            angle = False
        if ch == "," and not quote and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return [v for v in out if v]


def parse_params(text: str) -> dict[str, str]:
    """``;a=1;b;c="x"`` -> {a: "1", b: "", c: "x"} (names lower case)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key:
            out.setdefault(key, value.strip().strip('"'))
    return out


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: display name, URI and header parameters (tag, expires)."""

    uri: str
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    def __str__(self) -> str:
        disp = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{disp}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``"Name" <sip:u@h>;tag=x`` or ``sip:u@h;tag=x``. Raises SipParseError."""
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, sep, params = rest.partition(">")
        if not sep:
            raise SipParseError(f"unterminated <uri> in {value[:80]!r}")
        display = display.strip().strip('"')
    else:
        # addr-spec: parameters after the URI belong to the header (RFC 3261 20.10)
        uri, _, params = value.partition(";")
        params = ";" + params if params else ""
        display = ""
    uri = uri.strip()
    if not uri or ":" not in uri:
        raise SipParseError(f"not a URI: {value[:80]!r}")
    return NameAddr(uri, display[:128], parse_params(params))


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str]


def parse_via(value: str) -> Via:
    """``SIP/2.0/UDP host:port;branch=z9hG4bK..;rport`` -> Via. Raises SipParseError."""
    proto, _, rest = value.strip().partition(" ")
    parts = proto.split("/")
    if len(parts) != 3 or parts[0].upper() != "SIP":
        raise SipParseError(f"bad Via {value[:80]!r}")
    sent_by, _, params = rest.strip().partition(";")
    sent_by = sent_by.strip()
    host, port = sent_by, None
    if sent_by.startswith("["):
        host, _, tail = sent_by.partition("]")
        host += "]"
        if tail.startswith(":"):
            port = _port(tail[1:])
    elif sent_by.count(":") == 1:
        host, p = sent_by.split(":")
        port = _port(p)
    if not host:
        raise SipParseError(f"Via without a host: {value[:80]!r}")
    return Via(parts[2].upper(), host, port, parse_params(params))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise SipParseError(f"bad port {text!r}") from None
    if not 0 < port < 65536:
        raise SipParseError(f"bad port {text!r}")
    return port


def parse_message(data: bytes) -> Request | Response:
    """One SIP message. Raises :class:`SipParseError` (too large, malformed, incomplete)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes is too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # keep-alive CRLFs before a message
    if not lines:
        raise SipParseError("empty message")
    first = lines[0].strip()
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if len(line) > MAX_HEADER_LINE:
            raise SipParseError("header line too long")
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before any header")
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError(f"malformed header line {line[:60]!r}")
        headers.append((_canon(name), value.strip()))
        if len(headers) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} headers")
    hdrs = tuple(headers)
    length_text = next((v for k, v in hdrs if k == "Content-Length"), None)
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise SipParseError(f"bad Content-Length {length_text!r}") from None
        if length < 0 or length > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:length]
    if first.startswith("SIP/2.0 "):
        parts = first.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            raise SipParseError(f"bad status line {first[:80]!r}") from None
        if not 100 <= status <= 699:
            raise SipParseError(f"bad status {status}")
        msg: Request | Response = Response(hdrs, body, status,
                                           parts[2] if len(parts) > 2 else "")
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2].upper() != "SIP/2.0" or not _TOKEN.match(parts[0]):
            raise SipParseError(f"bad request line {first[:80]!r}")
        if ":" not in parts[1]:
            raise SipParseError(f"bad request URI {parts[1][:80]!r}")
        msg = Request(hdrs, body, parts[0].upper(), parts[1])
    for name in ("Call-ID", "From", "To", "CSeq", "Via"):
        if not msg.header(name):
            raise SipParseError(f"{name} missing")
    number, method = msg.cseq
    if number < 0 or number >= 2**31 or not method:
        raise SipParseError(f"bad CSeq {msg.header('CSeq')!r}")
    if isinstance(msg, Request) and method != msg.method and msg.method != "ACK":
        raise SipParseError("CSeq method differs from the request's")
    return msg


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages (Content-Length is mandatory on streams,
    RFC 3261 18.3). :meth:`feed` returns the complete messages' bytes; raises
    :class:`SipParseError` when the peer sends more than one message may hold (the caller
    closes the connection: framing is lost)."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            # RFC 5626 keep-alives: CRLFs between messages
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._max:
                    raise SipParseError("headers longer than a message may be")
                return out
            head = bytes(self._buf[:end])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", head)
            if m is None:
                raise SipParseError("no Content-Length on a stream transport")
            if len(m.group(1)) > 9:  # (int() of thousands of digits would not even parse)
                raise SipParseError("Content-Length too large for a message")
            total = end + 4 + int(m.group(1))
            if total > self._max:
                raise SipParseError(f"message of {total} bytes is too large")
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(8)
