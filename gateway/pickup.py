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
   - any other line (a softphone, a TAPI phone): the picker's client gets an `action` with
     what its phone needs: the target's number and sip_user and a dial string built from
     `[pickup] dial` (e.g. Asterisk's directed pickup `**{number}`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from .model import CallState, Direction
from .panels.rights import device_rights, panel_rights, visible_panels
from .server.wire import Pickup, WireError

if TYPE_CHECKING:
    from .app import Gateway
    from .model import Call
    from .server.session import Session

__all__ = ["Pickups", "find_ringing"]

log = logging.getLogger("gateway.pickup")


def find_ringing(gw: Gateway, devices: list[str]) -> tuple[str, Call] | None:
    """The longest-ringing incoming call on these devices."""
    best: tuple[str, Call] | None = None
    for d in devices:
        for c in gw.engine.device_state(d).calls:
            if c.state is CallState.RINGING and c.direction is Direction.IN:
                if best is None or c.since < best[1].since:
                    best = (d, c)
    return best


class Pickups:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    # -- the request ----------------------------------------------------------------------

    def _targets(self, session: Session, req: Pickup) -> tuple[list[str], str]:
        """The devices to pick from and a label of the target, after the rights check."""
        cfg = self.gw.config
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
            return self.gw.engine.devices_of(target), str(req.member)
        assert req.device is not None
        if req.device not in cfg.device_by_id:
            raise WireError("not_found", f"no device {req.device!r}", req.id)
        rights = device_rights(me, req.device, session.temp_devices())
        if rights is None or not rights.pickup:
            raise WireError("forbidden", f"no pickup right on device {req.device!r}", req.id)
        return [req.device], req.device

    async def pickup(self, session: Session, req: Pickup) -> None:
        gw = self.gw
        me = session.client
        assert me is not None
        devices, label = self._targets(session, req)
        op = str(req.op) if req.op is not None else secrets.token_hex(8)

        recorded = await gw.store.begin_op(me, op)
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
        await gw.store.finish_op(me, op, outcome)
        self._answer(session, req, outcome)

    async def _replay(self, session: Session, req: Pickup, op: str, recorded: dict) -> None:
        """A repeated op: wait for the first run to finish, then answer the same."""
        for _ in range(200):
            if recorded.get("state") == "done":
                break
            await asyncio.sleep(0.05)
            recorded = await self.gw.store.begin_op(session.client, op) or {"state": "pending"}  # type: ignore[arg-type]
        if recorded.get("state") != "done":
            raise WireError("unavailable", f"pickup {op!r} is still in progress", req.id)
        self._answer(session, req, recorded)

    @staticmethod
    def _answer(session: Session, req: Pickup, outcome: dict) -> None:
        if "error" in outcome:
            err = outcome["error"]
            raise WireError(err["code"], err["message"], req.id)
        session.send({"type": "ok", "id": req.id})
        session.send(outcome["message"])

    # -- carrying it out ------------------------------------------------------------------

    async def _run(self, session: Session, req: Pickup, op: str, devices: list[str],
                   label: str) -> dict:
        gw = self.gw
        cfg = gw.config
        me = cfg.client_by_name[session.client]  # type: ignore[index]
        target = find_ringing(gw, devices)
        if target is None:
            taker = await gw.store.taken_by(devices)
            if taker is not None and taker != me.name:
                # Lost the race: the call rang a moment ago and someone else took it.
                raise WireError("conflict", f"{taker} has just taken that call", req.id)
            raise WireError("not_found", f"nothing is ringing at {label}", req.id)
        device, call = target
        mine = gw.engine.devices_of(me, gw.clients.current(me.name))
        picker_device = gw.clients.current(me.name).current_device or (
            mine[0] if mine else None)

        holder = await gw.store.claim_call(call.id, me.name, cfg.pickup.claim_seconds)
        if holder is not None and holder != me.name:
            raise WireError("conflict", f"{holder} is already taking that call", req.id)
        # Said before the call moves, so a picker arriving after it stopped ringing hears
        # who took it rather than "nothing to take".
        await gw.store.mark_taken(device, me.name, cfg.pickup.claim_seconds)

        dcfg = cfg.device_by_id[device]
        pcfg = cfg.device_by_id.get(picker_device) if picker_device else None
        if pcfg is not None and pcfg.source == "ami" and gw.ami is not None:
            ok, message = await self._by_ami(pcfg, dcfg, call)
            if not ok:
                await gw.store.release_call(call.id, me.name)
                await gw.store.unmark_taken(device, me.name)
            log.info("pickup %s by %s of %s on %s via AMI: %s", op, me.name, call.id, device,
                     "ok" if ok else message)
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
        log.info("pickup %s by %s of %s on %s: action sent to the picker's phone",
                 op, me.name, call.id, device)
        return {"message": action}

    async def _by_ami(self, picker, target, call: Call) -> tuple[bool, str | None]:
        ami = self.gw.ami
        acfg = self.gw.config.sources.ami
        assert ami is not None and acfg is not None
        if not ami.connected:
            return False, "the Asterisk connection is down"
        uniqueid = call.id.split("/", 1)[1]
        try:
            if acfg.pickup == "redirect":
                caller = ami.translator.caller_channel(uniqueid)
                if caller is None:
                    return False, "the caller's channel is not known"
                reply = await ami.redirect(caller, picker.number, acfg.context)
            else:
                ringing = ami.translator.channel_name(uniqueid)
                if ringing is None:
                    return False, "the ringing channel is not known"
                from .tapi.ami_translate import channel_device

                line = picker.line_name
                picker_dial = line if "/" in line else f"Local/{picker.number}@{acfg.context}"
                reply = await ami.originate_pickupchan(picker_dial, channel_device(ringing))
        except Exception as exc:  # AmiError: no answer, connection dropped
            return False, f"Asterisk did not take the request: {exc}"
        if reply.get("Response", "").lower() != "success":
            return False, f"Asterisk refused: {reply.get('Message') or 'error'}"
        return True, None
