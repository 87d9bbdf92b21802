"""The AsyncAPI document: generated from the models, committed as generated, and strict."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.server.asyncapi import DOC_PATH, build_document, main, render_yaml
from gateway.server.messages import parse_server_message
from schema_check import check_exchange


def test_committed_document_is_the_generated_one():
    # Whoever changes a wire model regenerates docs/asyncapi.yaml in the same commit.
    assert DOC_PATH.read_text(encoding="utf-8") == render_yaml(build_document()), (
        "docs/asyncapi.yaml is out of date: run python -m gateway.server.asyncapi")


def test_check_option_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n")
    assert main(["--check", "-o", str(stale)]) == 1
    assert main(["-o", str(stale)]) == 0
    assert main(["--check", "-o", str(stale)]) == 0


def test_yaml_text_reads_back_as_the_document():
    doc = build_document()
    assert yaml.safe_load(render_yaml(doc)) == doc
    assert doc["asyncapi"] == "3.0.0"


def test_every_request_and_reply_type_is_in_the_document():
    doc = build_document()
    kinds = {s["properties"]["type"].get("const") for s in doc["components"]["schemas"].values()
             if "type" in s.get("properties", {})}
    assert kinds >= {"login", "subscribe", "unsubscribe", "select_device", "softphone",
                     "pickup", "journal", "journal_ack", "presence", "welcome", "snapshot",
                     "lamp", "lamps", "ok", "error", "action", "pickup_result"}
    for op in doc["operations"].values():  # every reference resolves
        for ref in op["messages"] + op.get("reply", {}).get("messages", []):
            assert ref["$ref"].rsplit("/", 1)[1] in doc["channels"]["session"]["messages"]


LAMP = {"type": "lamp", "device": "201", "name": "Alice", "number": "201", "lamp": "busy",
        "calls": [{"id": "201/1", "direction": "in", "state": "connected", "since": 1.5,
                   "remote": None, "remote_name": None}], "seq": 7}


def test_checker_accepts_a_described_frame_and_refuses_drift():
    assert check_exchange([], [json.dumps(LAMP)]) == []
    drift = {**LAMP, "secret": "+4930123"}  # a field nobody documented
    [problem] = check_exchange([], [json.dumps(drift)])
    assert "secret" in problem
    bad_lamp = {**LAMP, "lamp": "blinking"}
    assert check_exchange([], [json.dumps(bad_lamp)])


def test_checker_compares_requests_with_the_gateways_answers():
    good = json.dumps({"type": "subscribe", "id": 1, "panel": "sales"})
    bad = json.dumps({"type": "subscribe", "id": 2, "panel": "sales", "device": "201"})
    refused = {"type": "error", "id": 2, "code": "bad_request", "message": "give one"}
    ok_reply = {"type": "ok", "id": 2}
    wrongly_refused = {"type": "error", "id": 1, "code": "bad_request", "message": "?"}
    assert check_exchange([bad], [json.dumps(refused)]) == []
    assert check_exchange([bad], [json.dumps(ok_reply)])  # the schema refuses, gateway took it
    assert check_exchange([good], [json.dumps(wrongly_refused)])


def test_models_parse_what_the_gateway_sends():
    msg = parse_server_message(LAMP)
    assert type(msg).__name__ == "DeviceLamp" and msg.calls[0].state == "connected"
    with pytest.raises(ValueError):
        parse_server_message({"type": "nonsense"})
