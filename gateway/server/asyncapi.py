"""The WebSocket protocol as an AsyncAPI 3 document, generated from the wire models.

``python -m gateway.server.asyncapi`` writes docs/asyncapi.yaml (``--check`` exits 1 when the
file differs from what the code says; ``-o -`` prints it). The JSON Schemas in it are made by
pydantic from the request models (:mod:`gateway.server.wire`) and the reply/push models
(:mod:`gateway.server.messages`): the protocol is written once, in code.

The document is emitted by a small YAML writer below (block style, every string quoted as
JSON), so generating it needs nothing but the gateway's own dependencies and the output is
byte-for-byte stable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from . import messages as m
from . import wire as w

__all__ = ["build_document", "render_yaml", "DOC_PATH", "main"]

DOC_PATH = Path(__file__).resolve().parent.parent.parent / "docs" / "asyncapi.yaml"
CONTRACT_VERSION = "1"

# (message key, model, summary) for what clients send, in the contract's table order.
REQUESTS: list[tuple[str, Any, str, list[str]]] = [
    ("login", w.Login, "Log in with a password or a session token.", ["welcome", "error"]),
    ("subscribe", w.Subscribe, "Watch a panel or a device; `since` resumes.",
     ["panelSnapshot", "deviceSnapshot", "error"]),
    ("unsubscribe", w.Unsubscribe, "Stop watching a panel or a device.", ["ok", "error"]),
    ("select_device", w.SelectDevice, "Select the client's current device.", ["ok", "error"]),
    ("softphone", w.Softphone, "The client's own softphone reports a call.", ["ok", "error"]),
    ("pickup", w.Pickup, "Take over a ringing call (`op`: idempotency key).",
     ["ok", "error"]),
    ("journal", w.Journal, "Read the offline or the server journal.",
     ["journalReply", "error"]),
    ("journal_ack", w.JournalAck, "Remove offline journal entries up to one.",
     ["ok", "error"]),
    ("presence", w.PresenceSet, "Set the client's presence status.", ["ok", "error"]),
    ("admin_overview", w.AdminOverview, "Admins only: sources, processes, devices, sessions, "
     "limits.", ["adminOverview", "error"]),
    ("explain", w.Explain, "Admins only: why a device's or member's lamp is what it is.",
     ["explanation", "error"]),
    ("admin_reload", w.AdminReload, "Admins only: re-read the configuration file now.",
     ["reloadResult", "error"]),
]

# (message key, model(s), summary) for what the gateway sends.
REPLIES: list[tuple[str, Any, str]] = [
    ("welcome", m.Welcome, "The reply to a successful login."),
    ("panelSnapshot", m.PanelSnapshot, "A panel's state (reply to subscribe)."),
    ("deviceSnapshot", m.DeviceSnapshot, "A device's state (reply to subscribe)."),
    ("panelLamp", m.PanelLamp, "A panel member changed (its whole current state)."),
    ("deviceLamp", m.DeviceLamp, "A watched device changed."),
    ("lamps", m.Lamps, "Several lamp changes in one frame (clients that asked for batches)."),
    ("ok", m.Ok, "A plain acknowledgement."),
    ("error", m.Error, "A request that was not accepted; it changed nothing."),
    ("journalReply", m.JournalReply, "Journal entries, oldest first."),
    ("action", m.Action, "An instruction for the client's own phone (pickup)."),
    ("pickupResult", m.PickupResult, "The outcome of a pickup the PBX carried out."),
    ("adminOverview", m.AdminOverviewReply, "The admin view's overview (admins only)."),
    ("explanation", m.ExplanationReply, "A lamp's provenance told as data and a story."),
    ("reloadResult", m.ReloadResult, "The outcome of `admin_reload`."),
]

# Rules the gateway checks in code (parse_request, the session) that a per-field model cannot
# say: written here as JSON Schema (added with allOf) so that a client author's validator knows
# them too. The frame check of the test suite keeps them true.
CROSS_FIELD_RULES: dict[str, dict] = {
    "JournalAck": {"properties": {"upto": {"anyOf": [
        {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$"},
        {"type": "integer", "minimum": 0}]}}},
    "Subscribe": {"oneOf": [{"required": ["panel"]}, {"required": ["device"]}]},
    "Unsubscribe": {"oneOf": [{"required": ["panel"]}, {"required": ["device"]}]},
    # Neither password nor token: only a client marked --at-next-login (it has none yet).
    "Login": {"not": {"required": ["password", "token"]}},
    "Explain": {"oneOf": [{"required": ["device"]}, {"required": ["client"]}]},
    "Pickup": {"oneOf": [
        {"required": ["panel", "member"], "not": {"required": ["device"]}},
        {"required": ["device"],
         "not": {"anyOf": [{"required": ["panel"]}, {"required": ["member"]}]}},
    ]},
}

DESCRIPTION = """\
The BLF gateway's WebSocket protocol (contract section 4, version 1): JSON text frames, one
object per frame, each with a `type`. A request may carry an `id` (a string of at most 128
characters, or a number); the reply carries the same `id`. Live changes (`lamp`, `lamps`)
carry none. A request the gateway cannot accept gets an `error` and changes nothing.

Generated from the gateway's wire models by `python -m gateway.server.asyncapi`; do not edit
by hand. The prose reference with examples is docs/protocol.md.
"""


def _schemas() -> dict[str, Any]:
    models = [(mod, "validation") for _, mod, _, _ in REQUESTS]
    models += [(mod, "validation") for _, mod, _ in REPLIES]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    for name, rule in CROSS_FIELD_RULES.items():
        schemas[name] = {**schemas[name], "allOf": [rule]}
    ref = "#/components/schemas/{}".format
    schemas["ClientMessage"] = {
        "description": "Any message a client sends.",
        "oneOf": [{"$ref": ref(mod.__name__)} for _, mod, _, _ in REQUESTS],
    }
    schemas["ServerMessage"] = {
        "description": "Any message the gateway sends.",
        "anyOf": [{"$ref": ref(mod.__name__)} for _, mod, _ in REPLIES],
    }
    return schemas


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a plain dict."""
    schemas = _schemas()
    channel = {"$ref": "#/channels/session"}

    def msg_ref(key: str) -> dict:
        return {"$ref": f"#/channels/session/messages/{key}"}

    messages: dict[str, Any] = {}
    for key, mod, summary, _ in REQUESTS:
        messages[key] = {"name": key, "title": mod.__name__, "summary": summary,
                         "contentType": "application/json",
                         "payload": {"$ref": f"#/components/schemas/{mod.__name__}"}}
    for key, mod, summary in REPLIES:
        messages[key] = {"name": mod.model_fields["type"].annotation.__args__[0],
                          "title": mod.__name__, "summary": summary,
                          "contentType": "application/json",
                          "payload": {"$ref": f"#/components/schemas/{mod.__name__}"}}

    operations: dict[str, Any] = {}
    for key, _, summary, replies in REQUESTS:
        operations[key] = {
            "action": "receive",
            "channel": channel,
            "summary": summary,
            "messages": [msg_ref(key)],
            "reply": {"channel": channel,
                      "messages": [msg_ref(r) for r in replies]},
        }
    operations["lampChanges"] = {
        "action": "send", "channel": channel,
        "summary": "Live changes of subscribed panels and devices.",
        "messages": [msg_ref("panelLamp"), msg_ref("deviceLamp"), msg_ref("lamps")],
    }
    operations["pickupOutcome"] = {
        "action": "send", "channel": channel,
        "summary": "After a pickup's `ok`: what the picker's phone must do, or what the PBX did.",
        "messages": [msg_ref("action"), msg_ref("pickupResult")],
    }
    operations["unsolicitedError"] = {
        "action": "send", "channel": channel,
        "summary": "An error without a request id (a frame too large or rate limited, a "
                   "subscription dropped after a configuration change).",
        "messages": [msg_ref("error")],
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "BLF gateway WebSocket protocol",
            "version": CONTRACT_VERSION,
            "description": DESCRIPTION,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "plain": {"host": "127.0.0.1:8765", "protocol": "ws", "pathname": "/ws",
                      "description": "`[server] listen` without TLS."},
            "tls": {"host": "gateway.example.org:8765", "protocol": "wss", "pathname": "/ws",
                    "description": "`[server] tls_cert` and `tls_key` set."},
        },
        "channels": {
            "session": {
                "address": "/ws",
                "title": "One client session",
                "description": "Requests and their replies, and pushed changes, on one "
                               "WebSocket connection.",
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in messages},
            },
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


# -- a small, deterministic YAML writer -------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$.-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) and k.lower() not in _RESERVED else json.dumps(k)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(v, ensure_ascii=False)


def _emit(v: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(v, dict):
        for k, item in v.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(k)}:")
                _emit(item, indent + 1, out)
            elif (isinstance(item, str) and "\n" in item.rstrip("\n")
                  and not item.startswith(" ") and not item.endswith("\n\n")):
                # A literal block: "|" keeps the one final newline, "|-" means there is none.
                out.append(f"{pad}{_key(k)}: |" + ("" if item.endswith("\n") else "-"))
                out.extend(f"{pad}  {line}" if line else ""
                           for line in item.rstrip("\n").split("\n"))
            else:
                out.append(f"{pad}{_key(k)}: {_flow_empty(item)}")
    elif isinstance(v, list):
        for item in v:
            if isinstance(item, dict) and item:
                sub: list[str] = []
                _emit(item, indent + 1, sub)
                first = sub[0][len(pad) + 2:]
                out.append(f"{pad}- {first}")
                out.extend(sub[1:])
            elif isinstance(item, list) and item:
                out.append(f"{pad}-")
                _emit(item, indent + 1, out)
            else:
                out.append(f"{pad}- {_flow_empty(item)}")


def _flow_empty(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)


def render_yaml(doc: dict[str, Any]) -> str:
    out = ["# Generated by `python -m gateway.server.asyncapi` from the gateway's wire models.",
           "# Do not edit: change the models (gateway/server/wire.py, messages.py) instead."]
    _emit(doc, 0, out)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gateway.server.asyncapi",
        description="Write the WebSocket protocol's AsyncAPI 3 document (docs/asyncapi.yaml), "
        "generated from the gateway's wire models.")
    p.add_argument("-o", "--output", default=str(DOC_PATH),
                   help="where to write it ('-' for standard output; default %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the file differs from the generated text")
    args = p.parse_args(argv)
    text = render_yaml(build_document())
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python -m gateway.server.asyncapi",
                  file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
