"""One Asterisk Manager connection, sans I/O: bytes and `now` in, events and bytes out.

Like websockets' protocol objects or aioquic's ``QuicConnection``: no socket, no clock, no
asyncio. The caller feeds what it read (:meth:`AmiConnection.receive_data`, with the time),
writes what :meth:`AmiConnection.data_to_send` returns, and calls
:meth:`AmiConnection.handle_timer` at :meth:`AmiConnection.next_deadline`. Everything a
connection goes through is here, testable without a network:

1. **banner** (``Asterisk Call Manager/x.y``) within `banner_timeout`; then the Login is sent
   (the secret leaves memory with it);
2. **login**: its answer within `action_timeout`; ``Response: Error`` ends the connection
   (:class:`Closing` with `refused`);
3. **re-sync**: ExtensionStateList (hints first, so the translator knows which devices stand
   behind hint lines), DeviceStateList, CoreShowChannels; their events are translated and
   held back until all three lists completed (an Error answer counts as an empty list:
   Asterisk answers so when there are no hints), then delivered as ONE batch
   (:class:`ReportsReady` with `resync`), followed by :class:`Synced`. A re-sync not complete
   within `sync_timeout` ends the connection, so no lamp stays unknown for good;
4. **live**: each read's reports in one :class:`ReportsReady`; a Ping every `ping_interval`
   finds a half-open TCP connection (no answer within `action_timeout`: :class:`Closing`);
5. **actions** (:meth:`AmiConnection.send_action`) are answered by :class:`ActionAnswered`
   or fail with :class:`ActionFailed` (no answer in time, connection closing).

States as data, with the reasons:

=========  ===========================  ==========================================
state      left by                      because
=========  ===========================  ==========================================
BANNER     banner -> LOGIN              only a Manager banner says who listens
LOGIN      Success -> SYNC              actions and events need a login
           Error / timeout -> CLOSED    a refused login is retried by the caller
SYNC       3 lists complete -> LIVE     lamps are exact only after the whole state
           timeout -> CLOSED            a new connection re-syncs from scratch
LIVE       ping unanswered -> CLOSED    a silent peer may be gone (half-open TCP)
any        EOF / :meth:`close` -> CLOSED
=========  ===========================  ==========================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from ..linesource import Report
from ..numbers import redact
from .protocol import AmiMessage, AmiParser, AmiProtocolError, format_action
from .translate import AmiTranslator

__all__ = [
    "AmiConnection",
    "AmiError",
    "AmiLoginRefused",
    "State",
    "Event",
    "Connected",
    "LoggedIn",
    "ReportsReady",
    "Synced",
    "ActionAnswered",
    "ActionFailed",
    "Closing",
    "SYNC_LISTS",
]

log = logging.getLogger("gateway.ami")

# The lists asked for after every login, in this order: the hints first, so the translator
# knows which devices stand behind hint lines before the channels arrive.
SYNC_LISTS = (
    ("ExtensionStateList", "extensionstatelistcomplete"),
    ("DeviceStateList", "devicestatelistcomplete"),
    ("CoreShowChannels", "coreshowchannelscomplete"),
)
MAX_EARLY = 100  # messages kept from before the login answer (applied with the re-sync)


class AmiError(Exception):
    """An AMI action failed (not connected, connection lost, or a timeout)."""


class AmiLoginRefused(AmiError):
    """Asterisk answered the Login with ``Response: Error``."""


class State(str, Enum):
    BANNER = "banner"
    LOGIN = "login"
    SYNC = "sync"
    LIVE = "live"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    """The Manager banner arrived (`version`: what follows ``Asterisk Call Manager/``)."""

    version: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The Login was accepted; the re-sync lists are on their way out."""


@dataclass(frozen=True, slots=True)
class ReportsReady:
    """Core reports, in order: the whole re-sync in one (`resync`), then one per read."""

    reports: tuple[Report, ...]
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Synced:
    """The re-sync of this connection was delivered: the lamps are exact from here on."""

    reports: int


@dataclass(frozen=True, slots=True)
class ActionAnswered:
    action_id: str
    response: AmiMessage


@dataclass(frozen=True, slots=True)
class ActionFailed:
    action_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Closing:
    """The connection is over: write what is left, then close the transport."""

    reason: str
    refused: bool = False  # the Login was refused (the reason is Asterisk's message)


Event = Connected | LoggedIn | ReportsReady | Synced | ActionAnswered | ActionFailed | Closing


class AmiConnection:
    """One Manager connection (see the module docstring). `now` is any monotonic clock's
    seconds, the same for every call; `action_ids` yields unique ActionIDs."""

    def __init__(
        self,
        translator: AmiTranslator,
        username: str,
        secret: str,
        now: float,
        *,
        action_ids: Iterator[str],
        events: str = "call",
        banner_timeout: float = 10.0,
        action_timeout: float = 10.0,
        sync_timeout: float | None = None,
        ping_interval: float = 20.0,
    ) -> None:
        self.translator = translator
        self.username = username
        self._secret: str | None = secret
        self._ids = action_ids
        self._events = events
        self.action_timeout = action_timeout
        self.sync_timeout = 3 * action_timeout if sync_timeout is None else sync_timeout
        self.ping_interval = ping_interval
        self.state = State.BANNER
        self.synced_once = False  # this connection delivered a re-sync (its loss matters)
        self.close_reason: str | None = None
        self.refused = False  # the Login was refused (close_reason: Asterisk's message)
        self._routed = 0  # events routed; events_seen adds those the parser dropped
        self.protocol_errors = 0
        self._parser = AmiParser()
        self._out = bytearray()
        self._deadline: float | None = now + banner_timeout  # banner, login or sync
        self._login_id: str | None = None
        self._pending: dict[str, tuple[str, float]] = {}  # action id -> (name, deadline)
        self._ping_id: str | None = None
        self._next_ping: float | None = None
        self._sync_wait: dict[str, str] = {}  # list ActionID -> its completion event
        self._sync_buf: list[Report] = []
        self._early: list[AmiMessage] = []
        translator.reset()

    # -- what the caller asks -------------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        """Actions can be sent."""
        return self.state in (State.SYNC, State.LIVE)

    @property
    def synced(self) -> bool:
        return self.state is State.LIVE

    @property
    def events_seen(self) -> int:
        """Events received after the login (those nobody here wants included)."""
        return self._routed + self._parser.skipped

    def data_to_send(self) -> bytes:
        """The bytes to write now (empty when there are none)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: no timer)."""
        if self.state is State.CLOSED:
            return None
        times = [t for _, t in self._pending.values()]
        if self._deadline is not None:
            times.append(self._deadline)
        if self._next_ping is not None:
            times.append(self._next_ping)
        return min(times, default=None)

    def send_action(self, name: str, now: float, **fields: object) -> str:
        """Queue an action; its answer comes as :class:`ActionAnswered` (or
        :class:`ActionFailed`). Raises AmiError when not logged in, ValueError for a line
        break in a field."""
        if not self.logged_in:
            raise AmiError("AMI not connected")
        aid = next(self._ids)
        self._out += format_action(name, aid, **fields)
        self._pending[aid] = (name, now + self.action_timeout)
        return aid

    def close(self) -> list[Event]:
        """We end the connection: Logoff if logged in; pending actions fail."""
        if self.state is State.CLOSED:
            return []
        if self.logged_in:
            self._out += format_action("Logoff", next(self._ids))
        return self._close("closed by the gateway")

    # -- what happened ----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Bytes read from Asterisk -> events, in order."""
        if self.state is State.CLOSED:
            return []
        out: list[Event] = []
        live: list[Report] = []
        translate = self.translator.feed
        picked = self.translator.handlers
        routed = 0  # of the tuples below, added to _routed at the end
        for item in self._parser.feed(data):
            if item.__class__ is tuple:
                # A live event read by the translator's picks (the parser is bare once
                # live): its values straight to the translator.
                routed += 1
                try:
                    live += picked[item[0]](item[1])
                except Exception:  # a translator bug must not take the source down
                    log.exception("AMI: cannot translate %s event", item[2])
                continue
            if item.__class__ is AmiMessage and item.kind == "event" and \
                    self.state is State.LIVE:
                # Most of what arrives: a live event, straight to the translator (what
                # _dispatch does with it, without the routing an answer or a list item needs).
                self._routed += 1
                try:
                    live += translate(item)
                except Exception:  # a translator bug must not take the source down
                    log.exception("AMI: cannot translate %s event", item.name)
                continue
            if isinstance(item, AmiProtocolError):
                self.protocol_errors += 1
                log.warning("AMI: skipped bad data from Asterisk (%s): %r", item.reason,
                            redact(item.sample[:60]), extra={"source": "asterisk"})
                continue
            self._message(item, now, out, live)
            if self.state is State.CLOSED:
                break
        self._routed += routed
        if live:
            out.append(ReportsReady(tuple(live)))
        return out

    def receive_eof(self) -> list[Event]:
        """Asterisk closed the connection."""
        if self.state is State.CLOSED:
            return []
        reason = {State.BANNER: "connection closed before the banner",
                  State.LOGIN: "connection closed during login"}.get(
                      self.state, "connection closed by Asterisk")
        return self._close(reason)

    def handle_timer(self, now: float) -> list[Event]:
        """Deadlines that passed at `now`: timeouts, the next Ping."""
        if self.state is State.CLOSED:
            return []
        if self._deadline is not None and now >= self._deadline:
            if self.state is State.BANNER:
                return self._close("no Manager banner in time")
            if self.state is State.LOGIN:
                return self._close(f"no answer to Login in {self.action_timeout:g} s")
            log.warning("AMI re-sync not complete after %.0f s: reconnecting",
                        self.sync_timeout)
            return self._close(f"re-sync not complete after {self.sync_timeout:.0f} s")
        out: list[Event] = []
        for aid, (name, deadline) in list(self._pending.items()):
            if now < deadline:
                continue
            del self._pending[aid]
            if aid == self._ping_id:
                reason = f"no answer to Ping in {self.action_timeout:g} s"
                log.warning("AMI ping failed (%s): reconnecting", reason)
                return out + self._close(f"ping failed: {reason}")
            out.append(ActionFailed(aid, f"no answer in {self.action_timeout:g} s"))
        if self._next_ping is not None and now >= self._next_ping:
            # A half-open TCP connection (Asterisk host gone without a FIN) shows no error
            # on reads: only an unanswered Ping finds it.
            self._next_ping = None
            self._ping_id = self.send_action("Ping", now)
        return out

    # -- inside -------------------------------------------------------------------------------

    def _close(self, reason: str, refused: bool = False) -> list[Event]:
        self.state = State.CLOSED
        self.close_reason = reason
        self.refused = refused
        self._deadline = self._next_ping = None
        self._secret = None
        out: list[Event] = [ActionFailed(aid, "connection lost") for aid in self._pending]
        self._pending.clear()
        self._sync_wait.clear()
        self._sync_buf = []
        out.append(Closing(reason, refused))
        return out

    def _message(self, msg: AmiMessage, now: float, out: list[Event],
                 live: list[Report]) -> None:
        if self.state is State.BANNER:
            if msg.kind == "banner":
                out.append(Connected(msg.name))
                self._login(now)
            elif len(self._early) < MAX_EARLY:
                self._early.append(msg)
            return
        if self.state is State.LOGIN:
            if msg.kind == "response" and msg.action_id == self._login_id:
                self._login_answered(msg, now, out)
            elif len(self._early) < MAX_EARLY:
                self._early.append(msg)
            return
        self._dispatch(msg, now, out, live)

    def _login(self, now: float) -> None:
        self.state = State.LOGIN
        self._login_id = next(self._ids)
        fields: dict[str, object] = {"Username": self.username, "Secret": self._secret}
        if self._events:
            fields["Events"] = self._events
        self._out += format_action("Login", self._login_id, **fields)
        self._secret = None  # sent; not kept
        self._deadline = now + self.action_timeout

    def _login_answered(self, msg: AmiMessage, now: float, out: list[Event]) -> None:
        if msg.name.lower() != "success":
            out += self._close(msg.get("Message") or msg.name, refused=True)
            return
        self.state = State.SYNC
        out.append(LoggedIn())
        # From here on every event is routed the same way: the parser may drop the ones
        # neither the translator nor the re-sync asks for (Newexten, VarSet, ...) unread,
        # from its next read on.
        self._parser.wanted = self.translator.events | {c for _, c in SYNC_LISTS}
        self._parser.picks = self.translator.picks  # ... and read just what it reads
        self._deadline = now + self.sync_timeout
        for action, complete in SYNC_LISTS:
            aid = next(self._ids)
            self._sync_wait[aid] = complete
            self._out += format_action(action, aid)
        early, self._early = self._early, []
        for m in early:  # what came with the banner: part of this connection's state
            self._dispatch(m, now, out, [])

    def _dispatch(self, msg: AmiMessage, now: float, out: list[Event],
                  live: list[Report]) -> None:
        """Route one message after the login: answers to actions, list items, events."""
        aid = msg.action_id
        if msg.kind == "response":
            if aid is None:
                return
            if aid in self._pending:
                del self._pending[aid]
                if aid == self._ping_id:
                    self._ping_id = None
                    self._next_ping = now + self.ping_interval
                else:
                    out.append(ActionAnswered(aid, msg))
            elif aid in self._sync_wait and msg.name.lower() != "success":
                # ExtensionStateList answers Error when there are no hints: an empty list.
                log.info("AMI list %s: %s", aid, msg.get("Message"))
                self._list_done(aid, now, out)
            return
        if msg.kind != "event":
            return
        self._routed += 1
        try:
            reports = self.translator.feed(msg)
        except Exception:  # a translator bug must not take the source down
            log.exception("AMI: cannot translate %s event", msg.name)
            reports = []
        if self.state is State.SYNC:
            self._sync_buf += reports
            if aid is not None and self._sync_wait.get(aid) == msg.name.lower():
                self._list_done(aid, now, out)
            return
        live += reports

    def _list_done(self, aid: str, now: float, out: list[Event]) -> None:
        self._sync_wait.pop(aid, None)
        if self._sync_wait:
            return
        batch, self._sync_buf = self._sync_buf, []
        self.state = State.LIVE
        # Live, an event is only translated: the parser may hand over just its picks.
        self._parser.bare = True
        self.synced_once = True
        self._deadline = None
        if self.ping_interval > 0:
            self._next_ping = now + self.ping_interval
        out.append(ReportsReady(tuple(batch), resync=True))
        out.append(Synced(len(batch)))
