"""A SIP softphone, as a separate process (pjsua2 allows one Endpoint per process).

    python tests/sip/softphone.py --call sip:0301555@127.0.0.1:5080

Places one call (null audio device) and prints one JSON object per line on stdout:

- ``{"event": "ready"}`` once its user agent runs;
- ``{"event": "call", "state": "CALLING"|"EARLY"|"CONNECTING"|"CONFIRMED"|"DISCONNECTED",
  "call_id": "...", "remote": "..."}`` on every call state change.

It hangs up when it reads ``hangup`` on stdin, and exits when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading

import pjsua2 as pj


def emit(**obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Call(pj.Call):
    def onCallState(self, prm):  # noqa: N802 - pjsua2 name
        try:
            ci = self.getInfo()
            emit(event="call", state=ci.stateText.upper() if ci.stateText else str(ci.state),
                 call_id=ci.callIdString, remote=ci.remoteUri)
        except Exception as exc:  # never let an exception into C++
            emit(event="error", message=str(exc))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--call", required=True)
    args = ap.parse_args()

    commands: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put(None)

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    acc = pj.Account()
    acfg = pj.AccountConfig()
    acfg.idUri = "sip:alice.sip@127.0.0.1"
    acc.create(acfg)
    threading.Thread(target=read_stdin, daemon=True).start()
    emit(event="ready")
    call = Call(acc)
    prm = pj.CallOpParam(True)
    call.makeCall(args.call, prm)
    while True:
        ep.libHandleEvents(20)
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        if cmd == "hangup":
            try:
                call.hangup(pj.CallOpParam(True))
            except Exception as exc:
                emit(event="error", message=str(exc))
        elif cmd is None:
            break
    for _ in range(50):
        ep.libHandleEvents(10)
    del call
    acc.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    main()
