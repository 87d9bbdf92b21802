"""The gateway's inner vocabulary: frozen values shared by the core and the adapters.

Nothing here does I/O. Adapters translate their peers' messages into these values at the
border; the core (:mod:`gateway.calls`, :mod:`gateway.panels`) works on nothing else.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import Enum

__all__ = [
    "Lamp",
    "CallState",
    "Direction",
    "DeviceStatus",
    "Call",
    "DeviceState",
    "Presence",
    "ClientState",
    "LAMP_PRIORITY",
    "PRESENCE_STATUSES",
    "fast_init",
]


def fast_init(cls: type) -> type:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field straight
    through its slot: the same signature, defaults, errors and result as the generated one,
    for about half the CPU. (The generated one calls ``object.__setattr__`` by name for every
    field, to get past the frozen ``__setattr__``; these values are built for every report,
    call and state, so that was a measurable share of every bridge line.) The class stays
    frozen: only its own ``__init__`` writes the slots. Apply it above ``@dataclass``."""
    names = [f.name for f in fields(cls)]
    if any(f.default_factory is not MISSING or not f.init for f in fields(cls)) \
            or not hasattr(cls, "__slots__") or "__post_init__" in vars(cls):
        raise TypeError(f"fast_init: {cls.__name__} is not a plain frozen slotted dataclass")
    ns: dict = {}
    params = []
    for f in fields(cls):
        ns[f"_set_{f.name}"] = vars(cls)[f.name].__set__  # the slot's member descriptor
        if f.default is MISSING:
            params.append(f.name)
        else:
            ns[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", ns)  # noqa: S102
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls


class Lamp(str, Enum):
    """What a BLF lamp says (contract section 2)."""

    UNKNOWN = "unknown"
    OFFLINE = "offline"
    IDLE = "idle"
    RINGING = "ringing"
    OUTGOING = "outgoing"
    BUSY = "busy"
    HELD = "held"


# Merge order of contract section 2: ringing > busy > held > outgoing > idle > offline > unknown.
# A higher number wins when several devices (or calls) feed one lamp.
LAMP_PRIORITY: dict[Lamp, int] = {
    Lamp.UNKNOWN: 0,
    Lamp.OFFLINE: 1,
    Lamp.IDLE: 2,
    Lamp.OUTGOING: 3,
    Lamp.HELD: 4,
    Lamp.BUSY: 5,
    Lamp.RINGING: 6,
}


class CallState(str, Enum):
    """A call's phase as the gateway tells it (the `state` of a call on the wire)."""

    DIALING = "dialing"  # outgoing, not yet answered: dial tone, dialing, ringback, proceeding
    RINGING = "ringing"  # incoming and alerting: this is the call a colleague can pick up
    CONNECTED = "connected"  # talking, also conferenced
    HELD = "held"


class Direction(str, Enum):
    IN = "in"
    OUT = "out"


class DeviceStatus(str, Enum):
    """Whether a device's line state can be trusted (independent of its calls)."""

    UNKNOWN = "unknown"  # source down, or not yet re-synced since it came back
    OFFLINE = "offline"  # out of service / not registered
    ONLINE = "online"  # in service: the calls say the rest


@fast_init
@dataclass(frozen=True, slots=True)
class Call:
    """One call leg as seen on one device (or reported by one softphone).

    `id` is unique within the gateway. `link` is an identity that another source may report
    for the same call (e.g. Asterisk's Linkedid, a SIP Call-ID): when both carry one, the
    shown-once rule matches on it instead of number and time. `replaces` is the value of an
    RFC 3891 Replaces header that takes this call over at the watched phone
    (``call-id;to-tag=..;from-tag=..``), where a SIP source knows its dialog; it only ever
    leaves the gateway in a pickup action for a picker with the pickup right.

    `remote_out` says the remote number was learned as outbound information (dialled, or the
    target of a transfer) on a call that keeps its first direction `in`: a watcher with
    `numbers = "inbound"` may not see it although the call is incoming.
    """

    id: str
    direction: Direction
    state: CallState
    since: float
    remote: str | None = None
    remote_name: str | None = None
    link: str | None = None
    replaces: str | None = None
    remote_out: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything the gateway knows about one device's line at one moment."""

    device: str
    status: DeviceStatus = DeviceStatus.UNKNOWN
    calls: tuple[Call, ...] = ()


PRESENCE_STATUSES = (
    "available",
    "away",
    "brb",
    "pause",
    "busy",
    "meeting",
    "offwork",
    "extwork",
    "dnd",
    "holiday",
    "message",
)


@fast_init
@dataclass(frozen=True, slots=True)
class Presence:
    status: str = "available"
    info: str | None = None


@dataclass(frozen=True, slots=True)
class ClientState:
    """A client's run-time state: what its sessions told the gateway.

    `logged_in` is True, False or "locked" (logged in, screen locked);
    `current_device` is the device its CTI client selected (None: not chosen);
    `softphone` holds the calls its own SIP softphone reported;
    `temp_devices` the hot-desk devices it holds for its session (by its login computer);
    `address` where it logged in from (for `blf-gateway status`).
    """

    client: str
    logged_in: bool | str = False
    current_device: str | None = None
    presence: Presence = field(default_factory=Presence)
    softphone: tuple[Call, ...] = ()
    temp_devices: tuple[str, ...] = ()
    address: str | None = None
