"""Call pickup (contract section 4, `pickup`): rights, the ringing target, one winner, one run.

1. Rights: the group's `pickup` right (panel + member), or a monitor right with `pickup`
   (device). Otherwise `forbidden`.
2. Target: an incoming call ringing on the member's devices (or on the device). Otherwise
   `not_found`.
3. Idempotency: a request that repeats an `op` of the same client is answered like the first,
   from the outcome recorded in Redis; it is not carried out again.
4. One winner: the ringing call is claimed in Redis (SET NX, `pickup.claim_seconds`), so of
   two pickers racing, on one gateway process or two, exactly one goes on; the other gets
   `conflict`.
5. Carrying it out, by the picker's current device (its selected one, else its first):
   - an Asterisk (AMI) line: the PBX does it, by `Redirect` of the caller's channel to the
     picker's extension, or by `Originate` to the picker's device with `PickupChan` on the
     ringing channel (`[sources.ami] pickup`). The picker gets `pickup_result`.
   - a TAPI line, with the ringing line reported by the same bridge program and that bridge
     taking commands: the bridge does it (linePickupW or lineRedirectW, docs/tapi-bridge.md).
     The picker gets `pickup_result`.
   - any other line (a softphone, a TAPI line whose bridge takes no commands): the picker's
     client gets an `action` with what its phone needs: the target's number and sip_user
     and a dial string built from `[pickup] dial` (e.g. Asterisk's directed pickup
     `**{number}`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from .clients import Clients
from .config import Config, DeviceCfg
from .errors import WireError
from .model import Call, CallState, Direction
from .panels.engine import Engine
from .panels.rights import device_rights, panel_rights, visible_panels
from .store import Store

__all__ = ["Pickups", "PbxPickup", "find_ringing"]

log = logging.getLogger("gateway.pickup")


class PickupRequest(Protocol):
    """The `pickup` request as the wire layer validated it."""

    id: Any
    panel: str | None
    member: str | None
    device: str | None
    op: str | int | None


class PickupSession(Protocol):
    """What a pickup needs of the picker's connection."""

    client: str | None

    def send(self, msg: dict) -> None: ...

    def temp_devices(self) -> tuple[str, ...]: ...


class PbxPickup(Protocol):
    """A PBX connection that can carry out a pickup itself (the Asterisk source, a TAPI
    bridge that takes commands)."""

    def handles(self, picker: DeviceCfg, target: DeviceCfg) -> bool:
        """True when this process can have the PBX move a call ringing at `target` to the
        picker's device."""

    async def pickup(self, picker: DeviceCfg, target: DeviceCfg,
                     call: Call) -> tuple[bool, str | None]:
        """Move `call` to `picker`: (True, None), or (False, why not)."""


def find_ringing(engine: Engine, devices: list[str]) -> tuple[str, Call] | None:
    """The longest-ringing incoming call on these devices."""
    best: tuple[str, Call] | None = None
    for d in devices:
        for c in engine.device_state(d).calls:
            if c.state is CallState.RINGING and c.direction is Direction.IN:
                if best is None or c.since < best[1].since:
                    best = (d, c)
    return best


class Pickups:
    """Answers `pickup` requests; `pbx` carries out those whose picker is on a PBX line."""

    def __init__(self, store: Store, engine: Callable[[], Engine], clients: Clients,
                 config: Callable[[], Config], pbx: PbxPickup) -> None:
        self.store = store
        self._engine = engine
        self.clients = clients
        self._config = config
        self.pbx = pbx

    # -- the request ----------------------------------------------------------------------

    def _targets(self, session: PickupSession, req: PickupRequest) -> tuple[list[str], str]:
        """The devices to pick from and a label of the target, after the rights check."""
        cfg = self._config()
        me = cfg.client_by_name[session.client]  # type: ignore[index]
        if req.panel is not None:
            group = cfg.group_by_name.get(req.panel)
            if group is None:
                raise WireError("not_found", f"no panel {req.panel!r}", req.id)
            if (req.panel not in visible_panels(cfg, me.name)
                    or not panel_rights(group, me.name).pickup):
                raise WireError("forbidden", f"no pickup right on panel {req.panel!r}", req.id)
            if req.member not in group.members:
                raise WireError("not_found", f"{req.member!r} is not on panel {req.panel!r}",
                                req.id)
            if req.member == me.name:
                raise WireError("forbidden", "that is your own phone: answer it", req.id)
            target = cfg.client_by_name[req.member]  # type: ignore[index]
            return self._engine().devices_of(target), str(req.member)
        assert req.device is not None
        if req.device not in cfg.device_by_id:
            raise WireError("not_found", f"no device {req.device!r}", req.id)
        rights = device_rights(me, req.device, session.temp_devices())
        if rights is None or not rights.pickup:
            raise WireError("forbidden", f"no pickup right on device {req.device!r}", req.id)
        return [req.device], req.device

    async def pickup(self, session: PickupSession, req: PickupRequest) -> None:
        me = session.client
        assert me is not None
        devices, label = self._targets(session, req)
        op = str(req.op) if req.op is not None else secrets.token_hex(8)

        recorded = await self.store.begin_op(me, op)
        if recorded is not None:
            await self._replay(session, req, op, recorded)
            return
        try:
            outcome = await self._run(session, req, op, devices, label)
        except WireError as exc:
            outcome = {"error": {"code": exc.code, "message": exc.message}}
        except Exception:
            log.exception("pickup by %s failed", me)
            outcome = {"error": {"code": "unavailable", "message": "pickup failed"}}
        await self.store.finish_op(me, op, outcome)
        self._answer(session, req, outcome)

    async def _replay(self, session: PickupSession, req: PickupRequest, op: str,
                      recorded: dict) -> None:
        """A repeated op: wait for the first run to finish, then answer the same."""
        for _ in range(200):
            if recorded.get("state") == "done":
                break
            await asyncio.sleep(0.05)
            recorded = (await self.store.begin_op(session.client, op)  # type: ignore[arg-type]
                        or {"state": "pending"})
        if recorded.get("state") != "done":
            raise WireError("unavailable", f"pickup {op!r} is still in progress", req.id)
        self._answer(session, req, recorded)

    @staticmethod
    def _answer(session: PickupSession, req: PickupRequest, outcome: dict) -> None:
        if "error" in outcome:
            err = outcome["error"]
            raise WireError(err["code"], err["message"], req.id)
        session.send({"type": "ok", "id": req.id})
        session.send(outcome["message"])

    # -- carrying it out ------------------------------------------------------------------

    async def _run(self, session: PickupSession, req: PickupRequest, op: str, devices: list[str],
                   label: str) -> dict:
        cfg = self._config()
        engine = self._engine()
        me = cfg.client_by_name[session.client]  # type: ignore[index]
        target = find_ringing(engine, devices)
        if target is None:
            taker = await self.store.taken_by(devices)
            if taker is not None and taker != me.name:
                # Lost the race: the call rang a moment ago and someone else took it.
                raise WireError("conflict", f"{taker} has just taken that call", req.id)
            raise WireError("not_found", f"nothing is ringing at {label}", req.id)
        device, call = target
        mine = engine.devices_of(me, self.clients.current(me.name))
        picker_device = self.clients.current(me.name).current_device or (
            mine[0] if mine else None)

        holder = await self.store.claim_call(call.id, me.name, cfg.pickup.claim_seconds)
        if holder is not None and holder != me.name:
            raise WireError("conflict", f"{holder} is already taking that call", req.id)
        # Said before the call moves, so a picker arriving after it stopped ringing hears
        # who took it rather than "nothing to take".
        await self.store.mark_taken(device, me.name, cfg.pickup.claim_seconds)

        dcfg = cfg.device_by_id[device]
        pcfg = cfg.device_by_id.get(picker_device) if picker_device else None
        if pcfg is not None and self.pbx.handles(pcfg, dcfg):
            ok, message = await self.pbx.pickup(pcfg, dcfg, call)
            if not ok:
                await self.store.release_call(call.id, me.name)
                await self.store.unmark_taken(device, me.name)
            log.info("pickup %s by %s of %s on %s via the %s source: %s", op, me.name, call.id,
                     device, pcfg.source, "ok" if ok else message)
            result = {"type": "pickup_result", "op": op, "ok": ok, "by": me.name if ok else None,
                      "device": picker_device, "target": label}
            if message:
                result["message"] = message
            return {"message": result}

        # The picker's own phone takes the call: tell its client how.
        owner = next((c for c in cfg.clients if device in c.devices), None)
        sip_user = owner.sip_user if owner is not None else ""
        action = {
            "type": "action",
            "action": "pickup",
            "op": op,
            "target": label,
            "device": device,
            "number": dcfg.number,
            "sip_user": sip_user,
            "dial": cfg.pickup.dial.format(number=dcfg.number, sip_user=sip_user, device=device),
            "call": call.id,
        }
        if call.replaces:
            # The SIP dialog of the ringing call, where the line's source knows it: the
            # picker's phone may INVITE the target with this Replaces header (RFC 3891).
            action["replaces"] = call.replaces
        log.info("pickup %s by %s of %s on %s: action sent to the picker's phone",
                 op, me.name, call.id, device)
        return {"message": action}
