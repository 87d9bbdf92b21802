"""RFC 3261 non-INVITE transactions (section 17.1.2 client, 17.2.2 server), sans-I/O.

Nothing here reads a clock or touches a socket: every call takes `now` (seconds, any
monotonic origin) and returns the actions to carry out (:class:`Send`, :class:`Deliver`,
:class:`TimedOut`); :meth:`TransactionLayer.next_deadline` says when to call
:meth:`TransactionLayer.tick` next. `dest` is opaque here: the transport's address of the
peer, handed back in every :class:`Send`.

The states and the timers, as data (RFC 3261 figures 6 and 8):

========== ============================ ===============================================
client     event                        then
========== ============================ ===============================================
trying     timer E (unreliable only)    resend, E = min(2E, T2)
trying     1xx                          proceeding; deliver
proceeding timer E                      resend, E = T2 (the server is alive: keep it up)
trying/pr. 2xx-6xx                      completed; deliver; timer K = T4 (0 if reliable)
trying/pr. timer F (64*T1)              terminated; TimedOut (the TU treats it as 408)
completed  any response                 absorbed (a retransmission)
completed  timer K                      terminated
server     request retransmission       trying: absorbed; proceeding/completed: the last
                                        response again
server     TU's 1xx / final             proceeding / completed; timer J = 64*T1 (0 if
                                        reliable)
completed  timer J                      terminated (forgotten)
========== ============================ ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .message import Request, Response, parse_via

__all__ = [
    "T1",
    "T2",
    "T4",
    "TxState",
    "Send",
    "Deliver",
    "TimedOut",
    "ClientTransaction",
    "ServerTransaction",
    "TransactionLayer",
]

T1 = 0.5  # RTT estimate
T2 = 4.0  # longest retransmit interval for non-INVITE requests
T4 = 5.0  # longest a message stays in the network


class TxState(str, Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Send:
    """Put `message` on the wire to `dest`."""

    message: Request | Response
    dest: Any


@dataclass(frozen=True, slots=True)
class Deliver:
    """A response for the transaction user (the request it answers is `request`)."""

    request: Request
    response: Response
    dest: Any


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No final response within 64*T1 (or the transport failed): the TU treats it as 408."""

    request: Request
    dest: Any


Action = Send | Deliver | TimedOut


class ClientTransaction:
    """One non-INVITE request we sent, until its final response (and timer K)."""

    __slots__ = ("request", "dest", "reliable", "state", "_e_interval", "_e_at", "_f_at",
                 "_k_at")

    def __init__(self, request: Request, dest: Any, now: float, *, reliable: bool) -> None:
        self.request, self.dest, self.reliable = request, dest, reliable
        self.state = TxState.TRYING
        self._e_interval = T1
        self._e_at: float | None = None if reliable else now + T1
        self._f_at: float | None = now + 64 * T1
        self._k_at: float | None = None

    def start(self) -> list[Action]:
        return [Send(self.request, self.dest)]

    def on_response(self, resp: Response, now: float) -> list[Action]:
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return []  # a retransmitted final response: absorbed
        if resp.status < 200:
            self.state = TxState.PROCEEDING
            return [Deliver(self.request, resp, self.dest)]
        self.state = TxState.COMPLETED
        self._e_at = self._f_at = None
        self._k_at = now + (0.0 if self.reliable else T4)
        return [Deliver(self.request, resp, self.dest)]

    def transport_error(self) -> list[Action]:
        if self.state in (TxState.TRYING, TxState.PROCEEDING):
            self.state = TxState.TERMINATED
            return [TimedOut(self.request, self.dest)]
        self.state = TxState.TERMINATED
        return []

    def next_deadline(self) -> float | None:
        times = [t for t in (self._e_at, self._f_at, self._k_at) if t is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self._k_at is not None and now >= self._k_at:
            self.state = TxState.TERMINATED
            self._k_at = None
            return out
        if self._f_at is not None and now >= self._f_at:
            self.state = TxState.TERMINATED
            self._e_at = self._f_at = None
            return [TimedOut(self.request, self.dest)]
        if self._e_at is not None and now >= self._e_at:
            if self.state is TxState.PROCEEDING:
                self._e_interval = T2
            else:
                self._e_interval = min(self._e_interval * 2, T2)
            self._e_at = now + self._e_interval
            out.append(Send(self.request, self.dest))
        return out


class ServerTransaction:
    """One non-INVITE request we received, until timer J after our final response."""

    __slots__ = ("request", "dest", "reliable", "state", "last", "_j_at")

    def __init__(self, request: Request, dest: Any, *, reliable: bool) -> None:
        self.request, self.dest, self.reliable = request, dest, reliable
        self.state = TxState.TRYING
        self.last: Response | None = None
        self._j_at: float | None = None

    def on_retransmission(self) -> list[Action]:
        if self.last is not None and self.state in (TxState.PROCEEDING, TxState.COMPLETED):
            return [Send(self.last, self.dest)]
        return []

    def respond(self, resp: Response, now: float) -> list[Action]:
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return []  # one final response per transaction
        self.last = resp
        if resp.status < 200:
            self.state = TxState.PROCEEDING
        else:
            self.state = TxState.COMPLETED
            self._j_at = now + (0.0 if self.reliable else 64 * T1)
        return [Send(resp, self.dest)]

    def next_deadline(self) -> float | None:
        return self._j_at

    def tick(self, now: float) -> list[Action]:
        if self._j_at is not None and now >= self._j_at:
            self.state = TxState.TERMINATED
            self._j_at = None
        return []


def _server_key(req: Request) -> tuple[str, str, str]:
    vias = req.header_all("Via")
    via = parse_via(vias[0])
    sent_by = f"{via.host}:{via.port or ''}".lower()
    branch = via.params.get("branch", "")
    if not branch.startswith("z9hG4bK"):
        # RFC 2543 peers: no usable branch; Call-ID and CSeq tell the transaction apart.
        branch = f"2543|{req.call_id}|{req.header('CSeq')}|{req.header('From')}"
    return branch, sent_by, req.method


class TransactionLayer:
    """All live transactions of one SIP agent, matched as RFC 3261 17.1.3 / 17.2.3 say.

    ``max_server`` bounds the server transactions kept (a flood of distinct requests cannot
    grow memory without bound: over the limit, :meth:`receive_request` returns None and the
    caller answers 503 statelessly).
    """

    def __init__(self, *, max_server: int = 20000, max_client: int = 20000) -> None:
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.server: dict[tuple[str, str, str], ServerTransaction] = {}
        self.max_server, self.max_client = max_server, max_client

    # client side
    def send_request(self, req: Request, dest: Any, now: float, *, reliable: bool
                     ) -> list[Action]:
        key = (req.branch, req.method)
        if len(self.client) >= self.max_client:
            return [TimedOut(req, dest)]
        tx = ClientTransaction(req, dest, now, reliable=reliable)
        self.client[key] = tx
        return tx.start()

    def receive_response(self, resp: Response, now: float) -> list[Action] | None:
        """Actions for a response; None when it matches no transaction (stray: drop it)."""
        tx = self.client.get((resp.branch, resp.cseq[1]))
        if tx is None:
            return None
        return tx.on_response(resp, now)

    def transport_error(self, req: Request) -> list[Action]:
        tx = self.client.get((req.branch, req.method))
        return tx.transport_error() if tx is not None else []

    # server side
    def receive_request(self, req: Request, dest: Any, *, reliable: bool
                        ) -> tuple[ServerTransaction, list[Action]] | None:
        """(transaction, actions): a new request gets a new transaction and no action (the
        TU answers through :meth:`respond`); a retransmission gets the old one and its last
        response again. None: too many transactions (answer 503 statelessly)."""
        key = _server_key(req)
        tx = self.server.get(key)
        if tx is not None:
            return tx, tx.on_retransmission()
        if len(self.server) >= self.max_server:
            return None
        tx = ServerTransaction(req, dest, reliable=reliable)
        self.server[key] = tx
        return tx, []

    @staticmethod
    def is_new(tx: ServerTransaction) -> bool:
        return tx.state is TxState.TRYING and tx.last is None

    @staticmethod
    def respond(tx: ServerTransaction, resp: Response, now: float) -> list[Action]:
        return tx.respond(resp, now)

    # timers
    def next_deadline(self) -> float | None:
        times = [t for tx in (*self.client.values(), *self.server.values())
                 if (t := tx.next_deadline()) is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        for key, tx in list(self.client.items()):
            d = tx.next_deadline()
            if d is not None and now >= d:
                out += tx.tick(now)
            if tx.state is TxState.TERMINATED:
                del self.client[key]
        for skey, stx in list(self.server.items()):
            d = stx.next_deadline()
            if d is not None and now >= d:
                stx.tick(now)
            if stx.state is TxState.TERMINATED:
                del self.server[skey]
        return out
