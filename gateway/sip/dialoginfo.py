"""Dialog state (RFC 4235, ``application/dialog-info+xml``) both ways, pure.

- :func:`parse_dialog_info` reads a NOTIFY body from a PBX or presence server (line source
  side) safely (defusedxml, bounded size and dialog count) into a :class:`DialogInfo`;
  :func:`dialog_phase` says what one dialog means for the core's transitions table.
- :func:`render_dialog_info` builds the body a desk phone gets (notifier side) from a lamp and
  the calls the subscribing client may see. Rights are applied by the caller
  (:func:`gateway.panels.rights.render_member` / ``render_device``): a call whose ``remote`` is
  None is rendered without a remote identity, so a number the watcher may not see is never
  written. The layout follows Asterisk's generator (res_pjsip_dialog_info_body_generator.c),
  which desk phones are tested against: idle is one ``terminated`` dialog, a ringing call
  ``early`` with ``direction="recipient"``, hold a local target with ``+sip.rendering=no``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from ..calls import Phase
from ..model import Lamp
from .xmlsafe import local_name, safe_root

__all__ = [
    "DialogEntry",
    "DialogInfo",
    "DialogInfoError",
    "parse_dialog_info",
    "dialog_phase",
    "render_dialog_info",
    "DIALOG_STATES",
    "MAX_DIALOG_INFO_BYTES",
    "MAX_DIALOGS",
]

MAX_DIALOG_INFO_BYTES = 64 * 1024
MAX_DIALOGS = 64  # one line with more simultaneous dialogs than this is not a phone line
DIALOG_STATES = ("trying", "proceeding", "early", "confirmed", "terminated")


class DialogInfoError(ValueError):
    """A body that is not a usable dialog-info document (the reason is the text)."""


@dataclass(frozen=True, slots=True)
class DialogEntry:
    """One ``<dialog>``: identifiers where the server sends them (Asterisk does not)."""

    id: str
    state: str  # one of DIALOG_STATES
    direction: str | None = None  # "initiator" (outgoing) | "recipient" (incoming) | None
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    remote_uri: str | None = None  # <remote><identity>
    remote_display: str | None = None
    held: bool = False  # local target with +sip.rendering=no


@dataclass(frozen=True, slots=True)
class DialogInfo:
    version: int
    full: bool  # state="full" (else "partial": only the dialogs that changed)
    entity: str
    dialogs: tuple[DialogEntry, ...]


_local = local_name


def _text(el: Element | None) -> str:
    return " ".join((el.text or "").split())[:256] if el is not None else ""


def _child(el: Element, name: str) -> Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _held(local: Element | None) -> bool:
    if local is None:
        return False
    target = _child(local, "target")
    if target is None:
        return False
    for param in target:
        if (_local(param.tag) == "param"
                and param.get("pname", "").lower() == "+sip.rendering"
                and param.get("pvalue", "").lower() == "no"):
            return True
    return False


def parse_dialog_info(body: bytes | str) -> DialogInfo:
    """Parse a dialog-info body. Raises :class:`DialogInfoError` for anything hostile."""
    root = safe_root(body, MAX_DIALOG_INFO_BYTES, "dialog-info", "dialog-info",
                     DialogInfoError)
    try:
        version = int(root.get("version", ""))
    except ValueError:
        raise DialogInfoError("version missing or not a number") from None
    if version < 0:
        raise DialogInfoError("negative version")
    dialogs = []
    for el in root:
        if _local(el.tag) != "dialog":
            continue
        if len(dialogs) >= MAX_DIALOGS:
            raise DialogInfoError(f"more than {MAX_DIALOGS} dialogs")
        state = _text(_child(el, "state")).lower()
        if state not in DIALOG_STATES:
            raise DialogInfoError(f"dialog state {state!r} is not one of RFC 4235's")
        direction = el.get("direction")
        if direction not in (None, "initiator", "recipient"):
            direction = None
        remote = _child(el, "remote")
        identity = _child(remote, "identity") if remote is not None else None
        dialogs.append(DialogEntry(
            id=(el.get("id") or "")[:128],
            state=state,
            direction=direction,
            call_id=(el.get("call-id") or None),
            local_tag=el.get("local-tag") or None,
            remote_tag=el.get("remote-tag") or None,
            remote_uri=_text(identity) or None,
            remote_display=(identity.get("display")[:128] if identity is not None
                            and identity.get("display") else None),
            held=_held(_child(el, "local")),
        ))
    return DialogInfo(version, root.get("state", "full") != "partial",
                      (root.get("entity") or "")[:256], tuple(dialogs))


def dialog_phase(d: DialogEntry) -> Phase:
    """What one dialog means as a call report.

    early + recipient: alerting here (a call a colleague can pick up). trying / proceeding /
    early as initiator or without a direction (Asterisk's "early" always carries recipient):
    an outgoing call being set up. confirmed: talking, or held where the local target says
    ``+sip.rendering=no``. terminated: ended.
    """
    if d.state == "terminated":
        return Phase.ENDED
    if d.state == "confirmed":
        return Phase.HELD if d.held else Phase.CONNECTED
    if d.state == "early" and d.direction == "recipient":
        return Phase.RINGING
    return Phase.DIALING


# Call state (as rendered for a watcher) -> (dialog state, direction default, held)
_CALL_DIALOG = {
    "ringing": ("early", "recipient", False),
    "dialing": ("proceeding", "initiator", False),
    "connected": ("confirmed", None, False),
    "held": ("confirmed", None, True),
}
# A lamp alone (the watcher may not see calls): one dialog standing for it.
_LAMP_DIALOG = {
    Lamp.RINGING: "ringing",
    Lamp.OUTGOING: "dialing",
    Lamp.BUSY: "connected",
    Lamp.HELD: "held",
}


def _sip_uri(user: str, host: str) -> str:
    safe = "".join(ch for ch in user if ch.isalnum() or ch in "+*#-_.!~")
    return f"sip:{safe or 'anonymous'}@{host}"


def _dialog_xml(dialog_id: str, state: str, direction: str | None, entity: str, host: str,
                held: bool, remote: str | None, remote_name: str | None) -> str:
    attrs = f"id={quoteattr(dialog_id)}"
    if direction:
        attrs += f' direction="{direction}"'
    parts = [f" <dialog {attrs}>", f"  <state>{state}</state>"]
    if remote:
        uri = _sip_uri(remote, host)
        display = f" display={quoteattr(remote_name)}" if remote_name else ""
        parts += ["  <remote>", f"   <identity{display}>{escape(uri)}</identity>",
                  f"   <target uri={quoteattr(uri)} />", "  </remote>"]
    if state != "terminated":
        target = f"   <target uri={quoteattr(entity)}"
        if held:
            target += (' >\n    <param pname="+sip.rendering" pvalue="no" />\n'
                       "   </target>")
        else:
            target += " />"
        parts += ["  <local>", f"   <identity>{escape(entity)}</identity>", target,
                  "  </local>"]
    parts.append(" </dialog>")
    return "\n".join(parts)


def render_dialog_info(entity: str, version: int, lamp: Lamp | str,
                       calls: Iterable[Mapping] = ()) -> str:
    """The full-state dialog-info body for one watched target.

    `entity`: the target's URI (``sip:201@gateway``); `version`: this subscription's counter
    (0 for the first NOTIFY, +1 for each next one, RFC 4235 section 4.1); `lamp`: the target's
    lamp; `calls`: the calls as the watcher may see them (dicts as
    :func:`gateway.panels.rights.render_call` makes them: ``id``, ``direction``, ``state``,
    ``remote``, ``remote_name``; ``remote`` None where the watcher has no number right).
    Without calls a busy/ringing/held/outgoing lamp is one dialog without identities; idle,
    offline and unknown are one ``terminated`` dialog, as Asterisk sends for Ready and
    Unavailable (dialog-info has no word for "offline").
    """
    try:
        lamp = Lamp(lamp)
    except ValueError:
        lamp = Lamp.UNKNOWN
    host = entity.split("@", 1)[1] if "@" in entity else "invalid"
    host = host.split(";", 1)[0].split(">", 1)[0] or "invalid"
    entity_user = entity.split(":", 1)[-1].split("@", 1)[0]
    dialogs: list[str] = []
    for call in list(calls)[:MAX_DIALOGS]:
        mapped = _CALL_DIALOG.get(str(call.get("state")))
        if mapped is None:
            continue
        state, direction, held = mapped
        direction = {"in": "recipient", "out": "initiator"}.get(
            str(call.get("direction")), direction)
        dialogs.append(_dialog_xml(str(call.get("id", ""))[:128] or entity_user, state,
                                   direction, entity, host, held, call.get("remote"),
                                   call.get("remote_name")))
    if not dialogs and lamp in _LAMP_DIALOG:
        state, direction, held = _CALL_DIALOG[_LAMP_DIALOG[lamp]]
        dialogs.append(_dialog_xml(entity_user, state, direction, entity, host, held,
                                   None, None))
    if not dialogs:
        dialogs.append(_dialog_xml(entity_user, "terminated", None, entity, host, False,
                                   None, None))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{int(version)}"'
            f' state="full" entity={quoteattr(entity)}>\n'
            + "\n".join(dialogs) + "\n</dialog-info>\n")
