"""Who may see what, and the one place where rights are applied to what leaves the gateway.

An *audience* is a topic (a panel, or a device) together with the :class:`Rights` its
watchers hold on it. Every change is rendered once per audience by :func:`render_member` or
:func:`render_device`; all the sockets of that audience get the same bytes. A number the
audience may not see is removed here and so never leaves the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ClientCfg, Config, GroupCfg
from ..model import Call, Direction
from .engine import DeviceView, MemberView

__all__ = [
    "Rights",
    "FULL_RIGHTS",
    "panel_rights",
    "device_rights",
    "combined_rights",
    "most_permissive",
    "visible_panels",
    "watchable_devices",
    "render_call",
    "may_see_number",
    "render_member",
    "render_device",
    "rights_json",
    "number_policy",
]


@dataclass(frozen=True, slots=True)
class Rights:
    """What one audience may see of a topic.

    calls: see the calls at all (else the lamp only); numbers: "none", "inbound" (numbers of
    incoming calls only) or "all"; pickup: may take a ringing call over; presence: see the
    members' presence status and logged-in state.
    """

    calls: bool = True
    numbers: str = "none"
    pickup: bool = False
    presence: bool = False


# A client's own devices: it sees everything of them.
FULL_RIGHTS = Rights(calls=True, numbers="all", pickup=False, presence=True)


def panel_rights(group: GroupCfg, client: str) -> Rights:
    """The rights `client` holds on a group's panel (the group's, or its override)."""
    r = group.rights_of(client)
    return Rights(calls=r.calls, numbers=r.numbers, pickup=r.pickup, presence=r.presence)


def visible_panels(config: Config, client: str) -> list[str]:
    """Panels a client may subscribe: groups it belongs to that are visible to it."""
    return [g.name for g in config.groups
            if client in g.members and g.rights_of(client).visible]


def device_rights(cfg: ClientCfg, device: str, temp: tuple[str, ...] = ()) -> Rights | None:
    """A client's rights on one device: full on its own (main or hot-desk), per its monitor
    right on a foreign one (clip: may see numbers), None where it may not watch it."""
    if device in cfg.devices or device in temp:
        return FULL_RIGHTS
    for m in cfg.monitor:
        if m.device == device:
            return Rights(calls=True, numbers="all" if m.clip else "none", pickup=m.pickup)
    return None


_NUMBERS_ORDER = {"none": 0, "inbound": 1, "all": 2}


def combined_rights(config: Config, watcher: str, device: str,
                    temp: tuple[str, ...] = ()) -> Rights | None:
    """A watcher's rights on one device where several apply (journal reading, pickup by
    device): its own device gives everything; otherwise the most permissive of its monitor
    right on the device and its rights in every group it shares with the device's owners.
    None: no right applies."""
    me = config.client_by_name[watcher]
    found = [r for r in (device_rights(me, device, temp),) if r is not None]
    owners = {c.name for c in config.owners_of(device)}
    for g in config.groups:
        if watcher in g.members and owners & set(g.members):
            found.append(panel_rights(g, watcher))
    return most_permissive(found)


def most_permissive(found: list[Rights]) -> Rights | None:
    """Several rights on one thing, combined: each flag if any right gives it, the widest
    `numbers` of the rights that show calls at all. A right with `calls = false` shows the
    lamp only, so its `numbers` cannot add to another right's calls: `calls = false,
    numbers = "all"` plus `numbers = "none"` shows calls without numbers. None: no right."""
    if not found:
        return None
    with_calls = [r.numbers for r in found if r.calls]
    return Rights(
        calls=bool(with_calls),
        numbers=max(with_calls, key=_NUMBERS_ORDER.__getitem__, default="none"),
        pickup=any(r.pickup for r in found),
        presence=any(r.presence for r in found),
    )


def watchable_devices(cfg: ClientCfg) -> list[str]:
    return list(dict.fromkeys([*cfg.devices, *(m.device for m in cfg.monitor)]))


def may_see_number(direction: str | Direction, remote_out: bool, rights: Rights) -> bool:
    """Whether an audience may see the far party's number (and name) of a call.

    `numbers = "inbound"` shows numbers of incoming calls only, and of those only what was
    learned as inbound information: a number dialled or transferred to during an incoming
    call (`remote_out`) is outbound information. The journals use the same rule."""
    if rights.numbers == "all":
        return True
    return (rights.numbers == "inbound" and Direction(direction) is Direction.IN
            and not remote_out)


def _may_see_number(call: Call, rights: Rights) -> bool:
    return may_see_number(call.direction, call.remote_out, rights)


def render_call(call: Call, rights: Rights) -> dict:
    visible = _may_see_number(call, rights)
    return {
        "id": call.id,
        "direction": call.direction.value,
        "state": call.state.value,
        "since": round(call.since, 3),
        "remote": call.remote if visible else None,
        "remote_name": call.remote_name if visible else None,
    }


def _render_calls(calls: tuple[Call, ...], rights: Rights) -> list[dict]:
    if not rights.calls:
        return []
    return [render_call(c, rights) for c in calls]


def render_member(view: MemberView, rights: Rights) -> dict:
    """A member as an audience may see it (the `members` items and `lamp` fields)."""
    out: dict = {
        "client": view.client,
        "display": view.display,
        "number": view.number,
        "lamp": view.lamp.value,
        "calls": _render_calls(view.calls, rights),
    }
    if rights.presence:
        out["presence"] = {"status": view.presence.status, "info": view.presence.info}
        out["logged_in"] = view.logged_in
    if view.reason is not None:
        out["reason"] = view.reason
    return out


def render_device(view: DeviceView, rights: Rights) -> dict:
    out = {
        "device": view.device,
        "name": view.name,
        "number": view.number,
        "lamp": view.lamp.value,
        "calls": _render_calls(view.calls, rights),
    }
    if view.reason is not None:
        out["reason"] = view.reason
    return out


def rights_json(rights: Rights) -> dict:
    return {
        "calls": rights.calls,
        "numbers": rights.numbers,
        "pickup": rights.pickup,
        "presence": rights.presence,
    }


def number_policy(config: Config, watcher: str | None, default: str = "none"):  # noqa: ANN201
    """What `watcher` may see of numbers in lamp provenance, per topic, as "all", "inbound"
    or "none": ("device", ID) -> the most permissive of its own right on the device (its
    main device: all; a monitor right: its clip) and the `numbers` right of every visible
    group it shares with the device's owners; ("softphone", CLIENT) -> all for its own
    softphone, else the most permissive of the visible groups it shares with CLIENT. A group
    whose `calls` right is off shows no calls at all, so it gives no number either. Where no
    right applies: `default`. watcher None: `default` everywhere (the command line)."""

    def shown(r: Rights) -> str:
        return r.numbers if r.calls else "none"

    def groups_with(members: set[str]) -> list[str]:
        assert watcher is not None
        out = []
        for g in config.groups:
            if watcher in g.members and members & set(g.members):
                r = g.rights_of(watcher)
                if r.visible:
                    out.append(r.numbers if r.calls else "none")
        return out

    def policy(kind: str, ident: str) -> str:
        if watcher is None or watcher not in config.client_by_name:
            return default
        found: list[str] = []
        if kind == "device":
            if ident not in config.device_by_id:
                return default
            own = device_rights(config.client_by_name[watcher], ident)
            if own is not None:
                found.append(shown(own))
            found += groups_with({c.name for c in config.owners_of(ident)})
        elif ident == watcher:
            return "all"
        else:
            found += groups_with({ident})
        return max(found, key=_NUMBERS_ORDER.__getitem__, default=default)

    return policy
