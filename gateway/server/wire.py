"""Wire messages of contract section 4: pydantic models for what clients send.

:func:`parse_request` turns one text frame into a typed request or raises :class:`WireError`
with the error code and a message that says what is wrong; the `id` is recovered whenever the
frame was a JSON object, so even a bad request's error carries it. The error codes and
:class:`WireError` live in :mod:`gateway.errors` (services below the server raise them too)
and are re-exported here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..errors import ERROR_CODES, WireError, error
from ..model import PRESENCE_STATUSES

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
]

MsgId = Union[Annotated[str, Field(max_length=128)], int, float, None]
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
    since: Annotated[int, Field(ge=0)] | None = None


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
    op: Annotated[str, Field(max_length=128)] | int | None = None


class Journal(_Req):
    type: Literal["journal"]
    scope: Literal["offline", "server"] = "offline"
    since: float | int | None = None


class JournalAck(_Req):
    type: Literal["journal_ack"]
    upto: Short | int


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


def parse_request(text: str | bytes) -> Any:
    """One frame -> a request model, or WireError("bad_request", ...)."""
    if isinstance(text, bytes):
        raise WireError("bad_request", "binary frames are not accepted: send JSON text")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise WireError("bad_request", "not valid JSON") from None
    if not isinstance(raw, dict):
        raise WireError("bad_request", "a message must be a JSON object")
    msg_id = raw.get("id")
    if not isinstance(msg_id, (str, int, float)) or isinstance(msg_id, bool):
        msg_id = None
    elif isinstance(msg_id, str) and len(msg_id) > 128:
        msg_id = None
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


