"""The one way SIP bodies (PIDF, dialog-info) are read as XML: bounded and defused.

No DTDs, no entities, no external references (an entity bomb or an XXE body is refused
before it expands), a size limit per body kind, and the root element checked.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

__all__ = ["local_name", "safe_root"]


def local_name(tag: object) -> str:
    """An element's name without its namespace (`{urn:ietf:params:xml:ns:pidf}tuple` ->
    `tuple`); "" for comments and processing instructions."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def safe_root(body: bytes | str, max_bytes: int, root: str, what: str,
              error: type[Exception]) -> Element:
    """Parse `body` (at most `max_bytes`) and return its root element, which must be
    `root`; anything else raises `error` with the reason (`what` names the document)."""
    import defusedxml.ElementTree as SafeET  # noqa: PLC0415, N812 - the only XML entry point
    from defusedxml import DefusedXmlException  # noqa: PLC0415

    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if len(body) > max_bytes:
        raise error(f"body of {len(body)} bytes is too large for {what}")
    try:
        el = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True,
                               forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, RecursionError) as exc:
        raise error(f"not a safe XML document: {type(exc).__name__}: {exc}") from None
    if local_name(el.tag) != root:
        raise error(f"root element is {local_name(el.tag)!r}, not {root}")
    return el
