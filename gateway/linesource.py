"""The one contract every line source implements (TAPI bridge, Asterisk, SIP).

A source turns what a phone system says into the core's reports
(:class:`~gateway.calls.CallReport`, :class:`~gateway.calls.ServiceReport`) and hands them,
and the loss of a connection, to ONE handler (:class:`SourceEvents`). It never touches a
:class:`~gateway.calls.LineTracker` and never decides what a lamp shows: the handler
(:class:`gateway.sources.LineSources`) applies the reports with the clock at the edge,
publishes the changed device states and journals the ended calls.

Lines are given as a mapping `line name -> (device id, number)` (:data:`Lines`): the TAPI
line name, the AMI line (``PJSIP/201``, ``201``) or the SIP URI of each configured device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, Union

from .calls import CallReport, ServiceReport

__all__ = ["Report", "Lines", "SourceEvents", "LineSource", "device_lines"]

Report = Union[CallReport, ServiceReport]
Lines = Mapping[str, tuple[str, str]]


class SourceEvents(Protocol):
    """The handler of every source. Called on the event loop; must not block."""

    def reports(self, source: str, reports: Sequence[Report]) -> None:
        """`source` ("tapi_bridge", "ami", "sip") says these things happened, in order."""

    def connection_lost(self, source: str, conn: str | None) -> None:
        """A connection of `source` dropped (None: all of them): the devices it last
        reported are unknown until the source re-sends their state."""


class LineSource(Protocol):
    """A running source: started once, stopped once, told when the configured lines change."""

    name: str

    async def start(self) -> None:
        """Begin listening / connecting; returns once the source is running (it reconnects
        by itself from then on)."""

    async def stop(self) -> None:
        """Close every connection and task of the source; no event is emitted after it."""

    async def update_lines(self, lines: Lines) -> None:
        """The configuration changed: from now on report these lines."""


def device_lines(lines: Lines) -> dict[str, str]:
    """line name -> device id (for the sources that need no number)."""
    return {line: device for line, (device, _) in lines.items()}
