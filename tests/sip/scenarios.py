"""sipp scenarios that play a PBX's presence server (the peer the gateway's SIP source watches).

A scenario is built from steps, so each test states its PBX's behaviour in one line:

    presence_server([answer(), notify("open", "Ready"), pause(300), notify("open", "Ringing")])

`python -m tests.sip.scenarios DIR` writes the standard ones as XML files, to run by hand:
``sipp -sf DIR/flow.xml -i 127.0.0.1 -p 5080 -s 201 -nostdin``.
The bodies are what Asterisk's res_pjsip_pidf_body_generator sends: the note at presence
level, the basic state in the one tuple, and `<rpid:activities>` busy/away in a dm:person.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

__all__ = ["presence_server", "answer", "notify", "notify_dialog", "pause", "respond_refresh", "asterisk_pidf",
           "ignore_subscribe", "STANDARD"]

_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""

# The gateway's SUBSCRIBE: remember where to send NOTIFYs (Contact) and the dialog's From/To.
_RECV_SUBSCRIBE = """  <recv request="SUBSCRIBE" crlf="true">
    <action>
      <ereg regexp="sips?:[^&gt;;]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="contact"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="to"/>
    </action>
  </recv>
"""


def asterisk_pidf(basic: str, note: str, activity: str | None = None) -> str:
    """A PIDF body as Asterisk's chan_pjsip builds it ([service] is the watched user)."""
    person = (f"<dm:person><rpid:activities><rpid:{activity}/></rpid:activities></dm:person>\n"
              if activity else "")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<presence entity="sip:[service]@[local_ip]" xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">\n'
            f"<note>{note}</note>\n"
            '<tuple id="[service]">\n'
            f"<status><basic>{basic}</basic></status>\n"
            '<contact priority="1">sip:[service]@[local_ip]</contact>\n'
            "</tuple>\n" + person + "</presence>")


# Asterisk's (note, basic, activity) per extension state.
_ASTERISK = {
    "Ready": ("open", None),
    "Ringing": ("open", "busy"),
    "On the phone": ("open", "busy"),
    "On hold": ("open", "busy"),
    "Unavailable": ("closed", "away"),
}


class _Counter:
    def __init__(self) -> None:
        self.cseq = 0


def answer(code: int = 200, expires: int = 600) -> str:
    """Receive the gateway's SUBSCRIBE and answer it."""
    reason = {200: "OK", 481: "Call/Transaction Does Not Exist", 403: "Forbidden",
              404: "Not Found"}.get(code, "Whatever")
    exp = f"Expires: {expires}\n" if code // 100 == 2 else ""
    return _RECV_SUBSCRIBE + f"""  <send>
    <![CDATA[
SIP/2.0 {code} {reason}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port]>
{exp}Content-Length: 0

    ]]>
  </send>
"""


def ignore_subscribe() -> str:
    """Receive the gateway's SUBSCRIBE (and its retransmissions) and never answer."""
    return _RECV_SUBSCRIBE + '  <pause milliseconds="600000"/>\n'


def respond_refresh(code: int, expires: int = 600) -> str:
    """Receive an in-dialog SUBSCRIBE (a refresh) and answer it with `code`."""
    reason = {200: "OK", 481: "Call/Transaction Does Not Exist"}.get(code, "Whatever")
    exp = f"Expires: {expires}\n" if code // 100 == 2 else ""
    return f"""  <recv request="SUBSCRIBE" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 {code} {reason}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
{exp}Content-Length: 0

    ]]>
  </send>
"""


def notify(note: str = "Ready", *, body: str | None = None, state: str = "active;expires=600",
           content_type: str = "application/pidf+xml", expect: str = "200",
           event: str = "presence") -> str:
    """Send an in-dialog NOTIFY: an Asterisk body for `note`, or a raw `body`.

    `expect` is the response the gateway should give ("" to not wait for one)."""
    if body is None:
        basic, activity = _ASTERISK.get(note, ("open", None))
        body = asterisk_pidf(basic, escape(note), activity)
    if expect == "any":
        # Whatever the gateway answers (2xx, 400, 415...): a bad body may be refused.
        recv = "".join(f'  <recv response="{c}" optional="true" next="{{label}}"/>\n'
                       for c in (200, 400, 415, 488)) + '  <recv response="500"/>\n'
        recv += '  <label id="{label}"/>\n'
    elif expect:
        recv = f'  <recv response="{expect}" timeout="10000"/>\n'
    else:
        recv = ""
    return f"""  <send>
    <![CDATA[
NOTIFY [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$to];tag=[pid]SIPpTag[call_number]
To: [$from]
[last_Call-ID:]
CSeq: [cseq] NOTIFY
Max-Forwards: 70
Contact: <sip:[service]@[local_ip]:[local_port]>
Event: {event}
Subscription-State: {state}
Content-Type: {content_type}
Content-Length: [len]

{body}
    ]]>
  </send>
{recv}"""


def notify_dialog(body: str, *, state: str = "active;expires=600",
                  expect: str = "200") -> str:
    """An in-dialog NOTIFY with a dialog-info body (``[service]`` is the watched user)."""
    return notify(body=body, state=state, content_type="application/dialog-info+xml",
                  expect=expect, event="dialog")


def pause(ms: int) -> str:
    return f'  <pause milliseconds="{ms}"/>\n'


def presence_server(steps: list[str], name: str = "presence-server") -> str:
    """A UAS scenario: each new SUBSCRIBE dialog from the gateway plays `steps` again."""
    text = _HEAD.format(name=name) + "".join(steps)
    # Keep the dialog (and the sipp call) alive until sipp is killed: a scenario that ended
    # would make sipp answer the gateway's later requests with errors of its own.
    text += '  <pause milliseconds="600000"/>\n</scenario>\n'
    n = 0
    while "{label}" in text:
        n += 1
        text = text.replace("{label}", f"after{n}", 5)  # 4 recv + 1 label per NOTIFY
    # sipp numbers CSeq per call with [cseq]; each NOTIFY needs its own increasing value.
    n = 0
    while "CSeq: [cseq] NOTIFY" in text:
        n += 1
        text = text.replace("CSeq: [cseq] NOTIFY", f"CSeq: {n} NOTIFY", 1)
    return text


STANDARD = {
    "flow": [answer(), notify("Ready"), pause(200), notify("Ringing"), pause(200),
             notify("On the phone"), pause(200), notify("On hold"), pause(200),
             notify("Ready")],
    "terminated": [answer(), notify("On the phone"), pause(500),
                   notify("On the phone", state="terminated;reason=noresource")],
}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for key, steps in STANDARD.items():
        (out / f"{key}.xml").write_text(presence_server(steps, key))
        print(out / f"{key}.xml")
