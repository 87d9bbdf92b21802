"""A SIP desk phone's BLF key, as a separate process (pjsua2 allows one Endpoint per process).

    python tests/sip/deskphone.py --target sip:201@127.0.0.1:5070 [--user alice --password pw]

Subscribes to the target's presence (with digest credentials when given) and prints one JSON
object per line on stdout:

- ``{"event": "ready", "port": N}`` once listening;
- ``{"event": "notify", "state": "...", "body": "..."}`` for every NOTIFY received (raw, from
  pjsua's message log, so the test sees exactly what the gateway sent);
- ``{"event": "response", "code": N}`` for every final response to its SUBSCRIBEs;
- ``{"event": "sub", "state": "ACTIVE"|"TERMINATED"|..., "code": N, "reason": "..."}``
  for subscription state changes, and ``{"event": "presence", "online": bool, "note": "..."}``
  for what pjsua2 itself made of the state.

It exits when stdin closes (the test ends it) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading

import pjsua2 as pj

RX = re.compile(r"^RX \d+ bytes (Request|Response) msg (\S+) .*?:\r?\n(.*?)\r?\n--end msg--",
                re.S)


def emit(**obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Writer(pj.LogWriter):
    def write(self, entry):  # noqa: N802
        try:
            m = RX.match(entry.msg)
            if not m:
                return
            kind, what, msg = m.groups()
            head, _, body = msg.replace("\r\n", "\n").partition("\n\n")
            if kind == "Request" and what.startswith("NOTIFY/"):
                state = re.search(r"(?im)^Subscription-State:\s*(.*)$", head)
                emit(event="notify", state=state.group(1).strip() if state else "",
                     body=body)
            elif kind == "Response" and "/SUBSCRIBE/" in what:
                emit(event="response", code=int(what.split("/")[0]))
        except Exception as exc:  # noqa: BLE001 - never into C++
            emit(event="error", error=repr(exc))


class Buddy(pj.Buddy):
    def onBuddyEvSubState(self, prm):  # noqa: N802
        try:
            i = self.getInfo()
            emit(event="sub", state=i.subStateName, code=i.subTermCode,
                 reason=i.subTermReason)
        except Exception as exc:  # noqa: BLE001
            emit(event="error", error=repr(exc))

    def onBuddyState(self):  # noqa: N802
        try:
            i = self.getInfo()
            if i.subState == pj.PJSIP_EVSUB_STATE_ACTIVE:
                emit(event="presence", online=i.presStatus.status == pj.PJSUA_BUDDY_STATUS_ONLINE,
                     note=i.presStatus.note)
        except Exception as exc:  # noqa: BLE001
            emit(event="error", error=repr(exc))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--realm", default="blf-gateway")
    args = ap.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.medConfig.threadCnt = 0
    writer = Writer()
    cfg.logConfig.writer = writer
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4
    cfg.logConfig.decor = 0
    ep.libInit(cfg)
    tc = pj.TransportConfig()
    tc.port = 0
    tc.boundAddress = "127.0.0.1"
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    port = int(ep.transportGetInfo(tid).localName.rpartition(":")[2])
    ep.libStart()
    ep.audDevManager().setNullDev()
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user or 'deskphone'}@127.0.0.1:{port}"
    if args.user:
        acfg.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", args.realm, args.user, 0, args.password or ""))
    acc = pj.Account()
    acc.create(acfg, True)
    emit(event="ready", port=port)
    buddy = Buddy()
    bc = pj.BuddyConfig()
    bc.uri = args.target
    bc.subscribe = True
    buddy.create(acc, bc)
    while not stop.is_set():
        ep.libHandleEvents(20)
    try:
        buddy.subscribePresence(False)
        for _ in range(10):
            ep.libHandleEvents(20)
    except Exception:  # noqa: BLE001
        pass
    del buddy
    acc.shutdown()
    ep.libDestroy()
    del writer


if __name__ == "__main__":
    main()
