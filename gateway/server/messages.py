"""What the gateway sends (contract section 4), as pydantic models: the protocol's schema.

These models *describe* the frames; the gateway does not build them on its hot path (a lamp
change is rendered once per audience as a plain dict and encoded once, see
:mod:`gateway.server.hub`). They are used

- to generate the AsyncAPI document (``python -m gateway.server.asyncapi`` writes
  docs/asyncapi.yaml), together with the request models of :mod:`gateway.server.wire`;
- by the client library (:mod:`blf_gateway.client`) to give its users typed messages;
- by the test suite, which validates every frame the end-to-end tests exchange against the
  generated JSON Schemas, so the document cannot drift from the code.

Every model forbids unknown fields: a field the gateway starts sending without describing it
here makes the tests fail.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..errors import ERROR_CODES
from ..model import PRESENCE_STATUSES, Lamp

__all__ = [
    "ERROR_CODES",
    "MessageId",
    "CallInfo",
    "PresenceInfo",
    "RightsInfo",
    "Member",
    "ClientInfo",
    "DeviceInfo",
    "MonitorInfo",
    "Welcome",
    "PanelSnapshot",
    "DeviceSnapshot",
    "PanelLamp",
    "DeviceLamp",
    "Lamps",
    "Ok",
    "Error",
    "JournalEntry",
    "JournalReply",
    "Action",
    "PickupResult",
    "AdminOverviewReply",
    "ExplanationReply",
    "ReloadResult",
    "ServerMessage",
    "parse_server_message",
]


LampName = Literal[tuple(lamp.value for lamp in Lamp)]  # type: ignore[misc]
PresenceStatus = Literal[PRESENCE_STATUSES]  # type: ignore[valid-type]
NumbersRight = Literal["none", "inbound", "all"]

MessageId = Annotated[
    Union[str, int, float, None],
    Field(description="The request's `id`, echoed (null where the request carried none)."),
]


class _Msg(BaseModel):
    # Frozen and strict about unknown fields: these are descriptions of frames, and a
    # field that is not described is drift.
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- pieces -----------------------------------------------------------------------------------


class CallInfo(_Msg):
    """A call as a watcher sees it. `remote`/`remote_name` are null where the watcher may
    not see the number (its rights, or a withheld caller)."""

    id: str = Field(description="Unique in the gateway.")
    direction: Literal["in", "out"]
    state: Literal["dialing", "ringing", "connected", "held"]
    since: float = Field(description="Unix seconds when the call entered its current state.")
    remote: str | None
    remote_name: str | None


class PresenceInfo(_Msg):
    status: PresenceStatus
    info: str | None


class RightsInfo(_Msg):
    """What the subscriber holds on this topic (an addition to the contract)."""

    calls: bool
    numbers: NumbersRight
    pickup: bool
    presence: bool


LoggedIn = Annotated[
    Union[bool, Literal["locked"]],
    Field(description='true, false, or "locked" (logged in, screen locked).'),
]

UnknownReason = Annotated[
    Literal["store_unreachable", "store_not_answering", "store_disk_full",
            "store_cannot_persist", "store_read_only", "store_out_of_memory"] | None,
    Field(description="Only while the lamp is `unknown` because of the gateway's state "
          "store (Redis): why (docs/protocol.md, Lamps and calls)."),
]


class Member(_Msg):
    """A member of a panel in a snapshot. `presence` and `logged_in` only where the
    watcher holds the group's presence right."""

    client: str
    display: str
    number: str
    lamp: LampName
    calls: list[CallInfo]
    presence: PresenceInfo | None = None
    logged_in: LoggedIn | None = None
    reason: UnknownReason = None


class ClientInfo(_Msg):
    name: str
    type: Literal["computer", "user", "nologin"]
    display: str
    first_name: str
    last_name: str
    email: str
    number: str
    department: str
    sip_user: str


class DeviceInfo(_Msg):
    id: str
    name: str
    number: str
    temporary: bool = Field(description="A hot-desk device of this session.")


class MonitorInfo(_Msg):
    device: str
    clip: bool
    pickup: bool


# -- messages ---------------------------------------------------------------------------------


class Welcome(_Msg):
    """The reply to a successful `login`."""

    type: Literal["welcome"]
    id: MessageId = None
    client: ClientInfo
    devices: list[DeviceInfo]
    current_device: str | None
    panels: list[str] = Field(description="Panels (group names) the client may subscribe.")
    monitors: list[MonitorInfo]
    offline_calls: int = Field(ge=0, description="Offline journal entries waiting.")
    token: str = Field(description="Session token: present it instead of the password on "
                       "reconnect.")
    password: str | None = Field(None, description="Only on a login that transferred it "
                                 "(`blf-gateway password --at-next-login`).")
    admin: Literal[True] | None = Field(None, description="Present (true) only for a client "
                                        "with `admin = true`: it may use the admin requests "
                                        "(docs/admin.md).")


class PanelSnapshot(_Msg):
    """The reply to `subscribe` a panel. With `since`, only the members that changed after
    it (merge them); without, the whole panel (replace)."""

    type: Literal["snapshot"]
    id: MessageId = None
    panel: str
    seq: int
    rights: RightsInfo
    since: int | None = None
    members: list[Member]


class DeviceSnapshot(_Msg):
    """The reply to `subscribe` a device."""

    type: Literal["snapshot"]
    id: MessageId = None
    device: str
    name: str
    number: str
    seq: int
    rights: RightsInfo
    lamp: LampName
    calls: list[CallInfo]
    reason: UnknownReason = None


class PanelLamp(_Msg):
    """A live change of one panel member: its whole current state."""

    type: Literal["lamp"]
    panel: str
    member: str
    display: str
    number: str
    lamp: LampName
    calls: list[CallInfo]
    presence: PresenceInfo | None = None
    logged_in: LoggedIn | None = None
    reason: UnknownReason = None
    seq: int


class DeviceLamp(_Msg):
    """A live change of one watched device."""

    type: Literal["lamp"]
    device: str
    name: str
    number: str
    lamp: LampName
    calls: list[CallInfo]
    reason: UnknownReason = None
    seq: int


class Lamps(_Msg):
    """Several lamp changes in one frame, in order (only for a client that logged in with
    `batch: true`, and only when it has fallen behind)."""

    type: Literal["lamps"]
    changes: list[Union[PanelLamp, DeviceLamp]] = Field(min_length=1, max_length=500)


class Ok(_Msg):
    """A plain acknowledgement."""

    type: Literal["ok"]
    id: MessageId = None


class Error(_Msg):
    """A request the gateway did not accept; it changed nothing."""

    type: Literal["error"]
    id: MessageId = None
    code: Literal[ERROR_CODES]  # type: ignore[valid-type]
    message: str


class JournalEntry(_Msg):
    """One ended call. `remote`/`remote_name` null where the reader may not see them."""

    id: str = Field(description="Entry id; `journal_ack` takes it (offline journal).")
    call: str
    device: str | None
    client: str | None = Field(description="For a softphone call: whose softphone.")
    direction: Literal["in", "out"]
    remote: str | None
    remote_name: str | None
    start: float
    end: float
    answered: bool


class JournalReply(_Msg):
    """The reply to `journal`: entries oldest first."""

    type: Literal["journal"]
    id: MessageId = None
    scope: Literal["offline", "server"]
    entries: list[JournalEntry]


class Action(_Msg):
    """An instruction for the client's own phone: take the ringing call described here."""

    type: Literal["action"]
    action: Literal["pickup"]
    op: str
    target: str = Field(description="The member or device picked from.")
    device: str = Field(description="The device the call rings on.")
    number: str
    sip_user: str
    dial: str = Field(description="What to dial (from `[pickup] dial`).")
    call: str
    replaces: str | None = Field(
        None, description="Where the line's SIP source knows the call's dialog (dialog-info "
        "with call-id and tags): an RFC 3891 Replaces header value (`call-id;to-tag=..;"
        "from-tag=..;early-only`) for an INVITE that takes the call over; absent otherwise.")


class PickupResult(_Msg):
    """The outcome of a pickup the PBX carried out (an Asterisk picker)."""

    type: Literal["pickup_result"]
    op: str
    ok: bool
    by: str | None
    device: str | None = Field(description="The picker's device.")
    target: str
    message: str | None = None


# -- admin replies (clients with `admin = true` only; docs/admin.md) ---------------------------


class AdminOverviewReply(_Msg):
    """The reply to `admin_overview`: what the admin view shows. Numbers in it follow the
    admin's own rights."""

    type: Literal["admin_overview"]
    id: MessageId = None
    process: str = Field(description="The process that answered.")
    t: float = Field(description="When (unix seconds).")
    processes: list[dict[str, Any]] = Field(description="Gateway processes alive.")
    sources: list[dict[str, Any]] = Field(description="Line sources and their health.")
    devices: list[dict[str, Any]] = Field(description="Every device with its lamp.")
    members: list[dict[str, Any]] = Field(description="Every client with its member lamp.")
    sessions: list[dict[str, Any]] = Field(description="Sessions of the answering process.")
    rate_limits: dict[str, Any]
    config: dict[str, Any] = Field(description="Configuration path, digest, last reload.")
    provenance: dict[str, Any]


class ExplanationReply(_Msg):
    """The reply to `explain`: why a device's or a member's lamp is what it is, as data and
    as a story in plain words (`story`, newest last). Numbers follow the admin's rights."""

    type: Literal["explanation"]
    id: MessageId = None
    kind: Literal["device", "member"]
    story: list[str]
    keep: int = Field(ge=0, description="How many reports are kept per device.")
    lamp: LampName
    # a device
    device: str | None = None
    name: str | None = None
    number: str | None = None
    source: str | None = None
    line: str | None = None
    status: str | None = None
    calls: list[dict[str, Any]] | None = None
    records: list[dict[str, Any]] | None = None
    # a member
    client: str | None = None
    display: str | None = None
    mode: str | None = None
    logged_in: Any = None
    devices: list[dict[str, Any]] | None = None
    not_feeding: list[dict[str, Any]] | None = None
    softphone_on: bool | None = None
    softphone_calls: list[dict[str, Any]] | None = None
    shown_calls: list[dict[str, Any]] | None = None
    dropped: list[dict[str, Any]] | None = None
    softphone_records: list[dict[str, Any]] | None = None


class ReloadResult(_Msg):
    """The reply to `admin_reload`: what became of the configuration file."""

    type: Literal["reload_result"]
    id: MessageId = None
    t: float
    ok: bool
    errors: list[str] = Field(description="Every reason a refused file was refused.")
    changed: bool


ServerMessage = Union[
    Welcome,
    PanelSnapshot,
    DeviceSnapshot,
    PanelLamp,
    DeviceLamp,
    Lamps,
    Ok,
    Error,
    JournalReply,
    Action,
    PickupResult,
    AdminOverviewReply,
    ExplanationReply,
    ReloadResult,
]

# `type` alone does not tell a panel snapshot from a device snapshot: pick by type first
# (cheap, and a clear error), then by shape.
_BY_TYPE: dict[str, Any] = {
    "welcome": Welcome,
    "snapshot": Union[PanelSnapshot, DeviceSnapshot],
    "lamp": Union[PanelLamp, DeviceLamp],
    "lamps": Lamps,
    "ok": Ok,
    "error": Error,
    "journal": JournalReply,
    "action": Action,
    "pickup_result": PickupResult,
    "admin_overview": AdminOverviewReply,
    "explanation": ExplanationReply,
    "reload_result": ReloadResult,
}
_ADAPTERS: dict[str, TypeAdapter] = {}


def parse_server_message(raw: dict) -> BaseModel:
    """A decoded gateway frame -> its model (raises pydantic's ValidationError or
    ValueError for an unknown `type`)."""
    kind = raw.get("type")
    target = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if target is None:
        raise ValueError(f"unknown message type {kind!r}")
    adapter = _ADAPTERS.get(kind)  # type: ignore[arg-type]
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(target)  # type: ignore[index]
    return adapter.validate_python(raw)

