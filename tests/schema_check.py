"""Every frame the end-to-end tests exchange, checked against docs/asyncapi.yaml.

conftest's WsClient records the frames it sends and receives; when a test ends, the
`connect` fixture hands them to :func:`check_exchange`. A frame from the gateway must match the
schema of its `type`; a request the schema refuses must have been refused by the gateway
(`bad_request`) and one the schema accepts must not have been. So the published document
cannot drift from what the gateway does.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from gateway import strictjson

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"

__all__ = ["check_exchange", "schemas_by_type"]


@lru_cache(maxsize=1)
def _document() -> dict:
    return yaml.safe_load(DOC.read_text(encoding="utf-8"))


def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    doc = _document()
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


@lru_cache(maxsize=1)
def schemas_by_type() -> tuple[dict, dict]:
    """(gateway message type -> validators, client message type -> validators), read from
    the document's operations: what the gateway receives and what it sends."""
    doc = _document()
    by_key = doc["components"]["messages"]
    sent_by_gateway: dict[str, list] = {}
    received_by_gateway: dict[str, list] = {}
    for op in doc["operations"].values():
        refs = [r["$ref"] for r in op["messages"]]
        replies = [r["$ref"] for r in op.get("reply", {}).get("messages", [])]
        inbound = refs if op["action"] == "receive" else []
        outbound = (refs if op["action"] == "send" else []) + replies
        for target, lst in ((received_by_gateway, inbound), (sent_by_gateway, outbound)):
            for ref in lst:
                msg = by_key[ref.rsplit("/", 1)[1]]
                schema = msg["payload"]["$ref"].rsplit("/", 1)[1]
                # The wire `type` is the payload's `type` constant.
                kind = doc["components"]["schemas"][schema]["properties"]["type"]["const"]
                vals = target.setdefault(kind, [])
                if schema not in [n for n, _ in vals]:
                    vals.append((schema, _validator(schema)))
    return sent_by_gateway, received_by_gateway


def _problem(frame: dict, table: dict) -> str | None:
    """None when the frame matches the schema for its type, else why not."""
    kind = frame.get("type")
    candidates = table.get(kind) if isinstance(kind, str) else None
    if not candidates:
        return f"no message of type {kind!r} in the schema"
    reasons = []
    for name, validator in candidates:
        err = jsonschema.exceptions.best_match(validator.iter_errors(frame))
        if err is None:
            return None
        reasons.append(f"{name}: {'/'.join(map(str, err.absolute_path)) or '(frame)'}: "
                       f"{err.message[:200]}")
    return "; ".join(reasons)


def check_exchange(sent: list[str], received: list[str]) -> list[str]:
    """Problems found in one connection's frames (empty: all agree with the document)."""
    from_gw, to_gw = schemas_by_type()
    problems = []
    decoded = []
    for raw in received:
        frame = json.loads(raw)
        decoded.append(frame)
        why = _problem(frame, from_gw)
        if why is not None:
            problems.append(f"gateway sent a frame the schema does not describe: {why}\n"
                            f"    frame: {raw[:300]}")
    requests = []
    for raw in sent:
        try:
            # Strictly: NaN, Infinity and lone surrogates are not JSON (the gateway refuses
            # them before looking at the fields): the schema says nothing about them.
            frame = strictjson.loads(raw)
        except ValueError:
            continue  # not JSON: the schema says nothing about it
        if isinstance(frame, dict) and isinstance(frame.get("id"), (int, str)) \
                and not isinstance(frame.get("id"), bool):
            requests.append(frame)
    ids = [r["id"] for r in requests]
    for req in requests:
        if ids.count(req["id"]) != 1:
            continue  # a reused id: replies cannot be told apart
        reply = next((f for f in decoded if f.get("id") == req["id"]), None)
        if reply is None:
            continue  # e.g. rate limited (that error carries no id), or never answered
        why = _problem(req, to_gw)
        refused = reply.get("type") == "error" and reply.get("code") == "bad_request"
        if why is None and refused:
            problems.append("the schema accepts a request the gateway refused as bad_request "
                            f"({reply.get('message')}):\n    {json.dumps(req)[:300]}")
        elif why is not None and not refused:
            problems.append(f"the schema refuses a request the gateway accepted ({why}):\n"
                            f"    {json.dumps(req)[:300]}")
    return problems
