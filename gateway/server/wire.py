"""Wire messages of contract section 4: pydantic models for what clients send.

:func:`parse_request` turns one text frame into a typed request or raises :class:`WireError`
with the error code and a message that says what is wrong; the `id` is recovered whenever the
frame was a JSON object, so even a bad request's error carries it. The error codes and
:class:`WireError` live in :mod:`gateway.errors` (services below the server raise them too)
and are re-exported here.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..errors import ERROR_CODES, WireError, error
from ..model import PRESENCE_STATUSES
from ..strictjson import (
    StrictJSONError,
    has_lone_surrogate,
    lenient_loads,
    problem,
    suspect,
)

__all__ = [
    "ERROR_CODES",
    "WireError",
    "parse_request",
    "error",
    "Login",
    "Subscribe",
    "Unsubscribe",
    "SelectDevice",
    "Softphone",
    "Pickup",
    "Journal",
    "JournalAck",
    "PresenceSet",
    "AdminOverview",
    "Explain",
    "AdminReload",
    "Request",
    "stream_id",
]

# Limits on what a client may send (documented in docs/protocol.md). A request `id` is echoed
# in the reply, so it must be something every JSON reader can take back: a string of at most
# 128 characters, an integer of at most 63 bits, or a finite number.
ID_MAX_CHARS = 128
ID_INT_LIMIT = 2**63
SEQ_MAX = 2**63 - 1  # a `since` seq beyond this is not one of ours
TIME_MAX = 253402300799.0  # 9999-12-31: a `since` time beyond this is not a time
# A journal entry id is "MS-SEQ" (Redis writes the milliseconds and a sequence); each part
# at most 19 digits: every such number fits Redis' unsigned 64 bits, with room for one more.
STREAM_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"
STREAM_ID_PART_MAX = 10**19 - 1

MsgId = Union[Annotated[str, Field(max_length=ID_MAX_CHARS)],
              Annotated[int, Field(gt=-ID_INT_LIMIT, lt=ID_INT_LIMIT)],
              Annotated[float, Field(allow_inf_nan=False)], None]
Short = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=512)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: MsgId = None


class Login(_Req):
    type: Literal["login"]
    client: Short
    password: Annotated[str, Field(max_length=256)] | None = None
    token: Annotated[str, Field(max_length=256)] | None = None
    computer: Short | None = None
    # The client understands `lamps` frames: when it falls behind, several lamp changes
    # travel in one frame (an addition to the contract; off unless asked for).
    batch: bool = False


class Subscribe(_Req):
    type: Literal["subscribe"]
    panel: Short | None = None
    device: Short | None = None
    since: Annotated[int, Field(ge=0, le=SEQ_MAX)] | None = None


class Unsubscribe(_Req):
    type: Literal["unsubscribe"]
    panel: Short | None = None
    device: Short | None = None


class SelectDevice(_Req):
    type: Literal["select_device"]
    device: Short


class Softphone(_Req):
    type: Literal["softphone"]
    call: Short
    state: Literal["dialing", "ringing", "connected", "held", "ended"]
    direction: Literal["in", "out"]
    remote: Annotated[str, Field(max_length=64)] | None = None
    remote_name: Annotated[str, Field(max_length=128)] | None = None
    link: Annotated[str, Field(max_length=256)] | None = None


class Pickup(_Req):
    type: Literal["pickup"]
    panel: Short | None = None
    member: Short | None = None
    device: Short | None = None
    op: Annotated[str, Field(max_length=128)] | Annotated[
        int, Field(gt=-ID_INT_LIMIT, lt=ID_INT_LIMIT)] | None = None


class Journal(_Req):
    type: Literal["journal"]
    scope: Literal["offline", "server"] = "offline"
    since: Annotated[float, Field(ge=0, le=TIME_MAX, allow_inf_nan=False)] | None = None


def stream_id(value: str | int) -> str:
    """A journal entry id as Redis writes it ("MS-SEQ", or "MS"), each part at most 19
    digits; anything else is not an id (checked before it reaches Redis)."""
    text = str(value)
    ms, dash, seq = text.partition("-")
    parts = [ms, seq] if dash else [ms]
    if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
        raise ValueError("must be a journal entry id, as in a `journal` reply")
    return text


class JournalAck(_Req):
    type: Literal["journal_ack"]
    upto: Annotated[str, Field(pattern=STREAM_ID_PATTERN)] | Annotated[
        int, Field(ge=0, le=STREAM_ID_PART_MAX)]

    @field_validator("upto", mode="after")
    @classmethod
    def _upto(cls, v: str | int) -> str:
        return stream_id(v)


class PresenceSet(_Req):
    type: Literal["presence"]
    status: Literal[PRESENCE_STATUSES]  # type: ignore[valid-type]
    info: Text | None = None
    locked: bool | None = None  # the client's screen is locked (logged_in: "locked")


class AdminOverview(_Req):
    """Admins only (docs/admin.md): sources, processes, devices, sessions, limits."""

    type: Literal["admin_overview"]


class Explain(_Req):
    """Admins only: why a device's or a member's lamp is what it is (its provenance)."""

    type: Literal["explain"]
    device: Short | None = None
    client: Short | None = None


class AdminReload(_Req):
    """Admins only: read the configuration file now; the reply says what became of it."""

    type: Literal["admin_reload"]


Request = Annotated[
    Union[Login, Subscribe, Unsubscribe, SelectDevice, Softphone, Pickup, Journal, JournalAck,
          PresenceSet, AdminOverview, Explain, AdminReload],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter = TypeAdapter(Request)
_TYPES = {"login", "subscribe", "unsubscribe", "select_device", "softphone", "pickup",
          "journal", "journal_ack", "presence", "admin_overview", "explain", "admin_reload"}


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"][1:]) or "message"
        if e["type"] == "missing":
            parts.append(f"{loc}: required")
        elif e["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
        else:
            parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _valid_id(msg_id: Any) -> bool:
    if msg_id is None:
        return True
    if isinstance(msg_id, bool):
        return False
    if isinstance(msg_id, str):
        return len(msg_id) <= ID_MAX_CHARS and not has_lone_surrogate(msg_id)
    if isinstance(msg_id, int):
        return -ID_INT_LIMIT < msg_id < ID_INT_LIMIT
    if isinstance(msg_id, float):
        return math.isfinite(msg_id)
    return False


def parse_request(text: str | bytes) -> Any:
    """One frame -> a request model, or WireError("bad_request", ...)."""
    if isinstance(text, bytes):
        raise WireError("bad_request", "binary frames are not accepted: send JSON text")
    try:
        raw = lenient_loads(text)
    except StrictJSONError as exc:
        raise WireError("bad_request", str(exc)) from None
    if not isinstance(raw, dict):
        raise WireError("bad_request", "a message must be a JSON object")
    msg_id = raw.get("id")
    if not _valid_id(msg_id):
        # Nothing of a bad id is echoed: the reply must be valid JSON that any reader takes.
        raise WireError("bad_request", "id: must be a string of at most "
                        f"{ID_MAX_CHARS} characters, an integer of at most 63 bits or a "
                        "finite number")
    reason = problem(raw) if suspect(text) else None
    if reason is not None:
        raise WireError("bad_request", reason, msg_id)
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise WireError("bad_request", "missing 'type'", msg_id)
    if kind not in _TYPES:
        raise WireError("bad_request", f"unknown type {kind[:40]!r}", msg_id)
    try:
        req = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise WireError("bad_request", f"{kind}: {_describe(exc)}", msg_id) from None
    if isinstance(req, (Subscribe, Unsubscribe)) and (req.panel is None) == (req.device is None):
        raise WireError("bad_request", f"{kind}: give exactly one of 'panel' or 'device'", msg_id)
    if isinstance(req, Pickup) and not (
        (req.panel is not None and req.member is not None and req.device is None)
        or (req.device is not None and req.panel is None and req.member is None)
    ):
        raise WireError("bad_request", "pickup: give 'panel' and 'member', or 'device'", msg_id)
    # Neither is allowed: a client marked "send the password at next login" has none yet
    # (contract section 4); for any other client such a login fails like a wrong password.
    if isinstance(req, Explain) and (req.device is None) == (req.client is None):
        raise WireError("bad_request", "explain: give exactly one of 'device' or 'client'", msg_id)
    if isinstance(req, Login) and req.password is not None and req.token is not None:
        raise WireError("bad_request", "login: give 'password' or 'token', not both", msg_id)
    return req


