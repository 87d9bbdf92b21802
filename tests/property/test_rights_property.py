"""Property: nothing a watcher may not see ever appears in a frame or journal reply rendered
for it, whatever the configuration and the call history.

Random configurations (devices, owners, monitor rights, groups with random rights and
overrides) and random call histories (directions, later remote numbers, transfers, withheld
callers, softphone reports, answers, holds, ends) go through the real core: LineTracker and
CallTable, the Engine, the renderers, the journal filter and the lamp provenance's
redaction. Every number and name a report brings is a fresh token, classed by the direction of the report that brought it (a number
reported on an outgoing leg is outbound information, even on an incoming call). The oracle
below is written from the rules in docs/protocol.md and docs/clients.md, not from the code:
- `numbers = "none"`, or no calls right: no token at all;
- `numbers = "inbound"`: only tokens that were only ever inbound information;
- `numbers = "all"`, own device: anything.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.calls import CallReport, CallTable, LineTracker, Phase, ServiceReport
from gateway.config import Config
from gateway.journal import EntryFilter, entry_of
from gateway.model import ClientState, Direction
from gateway.panels.engine import Engine
from gateway.panels.rights import device_rights, panel_rights, render_device, render_member
from gateway.provenance import DeviceExplanation, redact
from gateway.tapi.bridge import BridgeLineError, parse_line

DEVICES = ["d1", "d2", "d3"]
CLIENTS = ["c1", "c2", "c3", "c4"]
NUMBERS = ["none", "inbound", "all"]
TOKEN = re.compile(r"\+49\d{6}|Nm\d{6}")
LEVEL = {"none": 0, "inbound": 1, "all": 2}

rights_st = st.fixed_dictionaries({"calls": st.booleans(), "numbers": st.sampled_from(NUMBERS),
                                   "visible": st.booleans()})


@st.composite
def configs(draw) -> Config:
    devices = [{"id": d, "number": f"20{i}", "journal": True} for i, d in enumerate(DEVICES)]
    clients = []
    for c in CLIENTS:
        own = draw(st.lists(st.sampled_from(DEVICES), unique=True, max_size=2))
        monitor = [{"device": d, "clip": draw(st.booleans())}
                   for d in draw(st.lists(st.sampled_from(DEVICES), unique=True, max_size=2))
                   if d not in own]
        clients.append({"name": c, "devices": own, "monitor": monitor, "journal": "rw",
                        "blf": {"devices": draw(st.sampled_from(["all", "first"])),
                                "softphone": draw(st.booleans())}})
    groups = []
    for g in range(draw(st.integers(1, 3))):
        members = draw(st.lists(st.sampled_from(CLIENTS), unique=True, min_size=1))
        overrides = []
        for m in members:
            if draw(st.booleans()):
                o = {k: v for k, v in draw(rights_st).items() if draw(st.booleans())}
                overrides.append({"client": m, **o})
        groups.append({"name": f"g{g}", "members": members, "rights": draw(rights_st),
                       "overrides": overrides})
    return Config.model_validate({"sources": {"tapi_bridge": {}}, "devices": devices,
                                  "clients": clients, "groups": groups})


class Oracle:
    """Tokens and the class of information each one is."""

    def __init__(self) -> None:
        self.n = 0
        self.outbound: set[str] = set()  # ever reported as outbound information
        self.first_dir: dict[tuple[str, str], Direction] = {}

    def fresh(self, kind: str) -> str:
        self.n += 1
        return f"+49{self.n:06d}" if kind == "num" else f"Nm{self.n:06d}"

    def allowed(self, text: str, level: str) -> list[str]:
        """Tokens in `text` that an audience with `numbers = level` may not see."""
        found = TOKEN.findall(text)
        if level == "all":
            return []
        if level == "none":
            return found
        return [t for t in found if t in self.outbound]


def panel_level(cfg: Config, group, watcher: str) -> str:
    r = group.rights_of(watcher)
    return r.numbers if r.calls else "none"


def journal_level(cfg: Config, reader: str, entry: dict) -> str | None:
    """What the rules say a reader may see of an entry: None (not the entry), or a level."""
    if entry["device"] is not None:
        dev = entry["device"]
        me = cfg.client_by_name[reader]
        if dev in me.devices:
            return "all"
        owners = {c.name for c in cfg.clients if dev in c.devices}
        found = [("all" if m.clip else "none") for m in me.monitor if m.device == dev]
        found += [g.rights_of(reader).numbers for g in cfg.groups
                  if reader in g.members and owners & set(g.members)
                  and g.rights_of(reader).calls]
    else:
        if entry["client"] == reader:
            return "all"
        found = [g.rights_of(reader).numbers for g in cfg.groups
                 if reader in g.members and entry["client"] in g.members
                 and g.rights_of(reader).calls]
    return max(found, key=LEVEL.__getitem__) if found else None


step_st = st.fixed_dictionaries({
    "softphone": st.booleans(),
    "owner": st.integers(0, 3),
    "call": st.sampled_from(["a", "b"]),
    "phase": st.sampled_from(list(Phase)),
    "direction": st.sampled_from([Direction.IN, Direction.OUT, None]),
    "remote": st.sampled_from(["fresh", "same", "none"]),
    "name": st.booleans(),
    "withheld": st.sampled_from([False, False, False, True]),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), steps=st.lists(step_st, min_size=1, max_size=25))
def test_no_watcher_ever_sees_a_number_it_may_not(cfg, steps):
    oracle = Oracle()
    engine = Engine(cfg)
    tracker = LineTracker(DEVICES)
    tables = {c: CallTable(f"sp:{c}") for c in CLIENTS}
    seq = 0
    journal: list[tuple[str, dict]] = []
    for d in DEVICES:
        seq += 1
        engine.update_device(tracker.service(ServiceReport(d, True), 0.0)[0], seq)
    for i, step in enumerate(steps):
        now = 1.0 + i
        if step["softphone"]:
            owner = CLIENTS[step["owner"]]
            direction = step["direction"] or Direction.IN  # a softphone always says
            calls = {c.id: c for c in tables[owner].snapshot()}
            key = f"sp:{owner}/{step['call']}"
        else:
            owner = DEVICES[step["owner"] % 3]
            direction = step["direction"]
            calls = {c.id: c for c in tracker.state(owner).calls}
            key = f"{owner}/{step['call']}"
        current = calls.get(key)
        # The class of what this report brings: its own direction, else the call's.
        effective = direction or (current.direction if current else (
            Direction.OUT if step["phase"] is Phase.DIALING else Direction.IN))
        remote = {"fresh": oracle.fresh("num"), "none": None,
                  "same": current.remote if current else None}[step["remote"]]
        name = oracle.fresh("name") if step["name"] else None
        report = CallReport(owner, step["call"], step["phase"], direction, remote, name,
                            withheld=step["withheld"])
        # A report the transitions table refuses (late, garbled) teaches nothing; one it
        # takes with an outbound direction makes what it carries outbound information.
        verdict = (tables[owner] if step["softphone"] else tracker).judge(report)
        if effective is Direction.OUT and verdict.accepted:
            oracle.outbound.update(t for t in (remote, name) if t)
        seq += 1
        if step["softphone"]:
            tables[owner].apply(report, now)
            deltas = engine.update_client(
                ClientState(owner, logged_in=True, softphone=tables[owner].snapshot()), seq)
            ended = [(None, owner, e) for e in tables[owner].take_ended()]
        else:
            changed = tracker.call(report, now)
            deltas = [x for s in changed for x in engine.update_device(s, seq)]
            ended = [(e.owner, None, e) for e in tracker.take_ended()]
        for dev, client, e in ended:
            journal.append((f"{seq}-{len(journal)}", entry_of(e, dev, client)))

        # Every frame any audience would get for these changes.
        for delta in deltas:
            if delta.kind == "member":
                for g in cfg.groups:
                    if delta.key not in g.members:
                        continue
                    for w in g.members:
                        text = json.dumps(render_member(delta.view, panel_rights(g, w)))
                        bad = oracle.allowed(text, panel_level(cfg, g, w))
                        assert not bad, (w, g.name, text)
            else:
                for w in CLIENTS:
                    rights = device_rights(cfg.client_by_name[w], delta.key)
                    if rights is None:
                        continue
                    me = cfg.client_by_name[w]
                    level = "all" if delta.key in me.devices else next(
                        "all" if m.clip else "none" for m in me.monitor if m.device == delta.key)
                    text = json.dumps(render_device(delta.view, rights))
                    assert not oracle.allowed(text, level), (w, delta.key, text)
                # The lamp's provenance (the admin view, `explain`) for a viewer at each
                # level shows no more than the frames do.
                for level in NUMBERS:
                    e = DeviceExplanation(delta.key, "", "", "tapi_bridge", delta.key,
                                          delta.view.lamp.value, "online", delta.view.calls,
                                          (), 0)
                    shown = redact(e, lambda kind, ident, level=level: level)
                    text = json.dumps([[c.remote, c.remote_name] for c in shown.calls])
                    assert not oracle.allowed(text, level), (level, text)
    # Every journal reply any reader would get.
    for reader in CLIENTS:
        shown = EntryFilter(cfg, reader).render(journal)
        shown_ids = {e["id"] for e in shown}
        for entry_id, entry in journal:
            level = journal_level(cfg, reader, entry)
            if level is None:
                assert entry_id not in shown_ids, (reader, entry)
        for e in shown:
            level = journal_level(cfg, reader, e)
            assert level is not None, (reader, e)
            assert not oracle.allowed(json.dumps(e), level), (reader, level, e)


LINES = {"Line": ("d", "202")}
OWN = ["202", "+4930555202", "0049 30 555-202", "(030) 555202"]


@st.composite
def bridge_lines(draw, oracle_tokens: list[str]):
    state = draw(st.sampled_from(["offering", "accepted", "dialing", "ringback", "proceeding",
                                  "connected", "conferenced", "onhold", "onholdpendtransfer",
                                  "disconnected", "idle", "busy", "unknown"]))
    msg = {"device": "Line", "call": draw(st.sampled_from(["1", "2"])), "state": state}
    for field in ("caller", "called"):
        kind = draw(st.sampled_from(["own", "token", "absent"]))
        if kind == "own":
            msg[field] = draw(st.sampled_from(OWN))
        elif kind == "token":
            oracle_tokens.append(f"+33{len(oracle_tokens):06d}")
            msg[field] = oracle_tokens[-1]
    if draw(st.booleans()):
        msg["blocked"] = draw(st.booleans())
    return msg


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_bridge_numbers_dialled_from_the_line_never_reach_inbound_watchers(data):
    """A number in `called` while the line's own number (in any form) is the `caller` is
    outbound information: an inbound-only audience never sees it, whatever came before;
    and the line's own extension is never shown as the far party."""
    from gateway.panels.rights import Rights, render_call

    tokens: list[str] = []
    tracker = LineTracker(["d"])
    tracker.service(ServiceReport("d", True), 0.0)
    dialled: set[str] = set()
    for i in range(data.draw(st.integers(1, 12))):
        msg = data.draw(bridge_lines(tokens))
        try:
            report = parse_line(json.dumps(msg), LINES)
        except BridgeLineError:
            continue
        if msg.get("caller") in OWN and msg.get("called") in tokens:
            dialled.add(msg["called"])
        if report is None:
            continue
        tracker.call(report, float(i))
        for call in tracker.state("d").calls:
            shown = render_call(call, Rights(numbers="inbound"))
            assert shown["remote"] not in dialled, (msg, call)
            assert call.remote not in ("202",), (msg, call)
