"""The one pjsua2 endpoint of a gateway process, driven by its own thread.

pjsua2 is a C library behind SWIG and it does not forgive: a call from a thread it does not
know, an assertion on a bad argument, a second Endpoint in the process, or a Python exception
escaping one of its callbacks aborts the whole process (see docs/sip.md). This module is the
fence around it:

- :class:`SipEndpoint` creates the library in a dedicated thread ("pjsua") and runs every
  pjsua2 call there. Anything else (the asyncio loop, tests) hands work over with
  :meth:`SipEndpoint.call` (a :class:`concurrent.futures.Future`) or :meth:`SipEndpoint.run`
  (awaitable). Adapters deliver results to asyncio with ``loop.call_soon_threadsafe``.
- Why ``threadCnt=0`` and one polling thread rather than pjsua's worker thread: with a worker,
  callbacks arrive on pjsua's thread while it holds the PJSUA lock, and our commands would
  come from another thread that must take the same lock while holding the GIL: the classic
  lock-order deadlock between the GIL and PJSUA_LOCK. With one thread that both polls
  (``libHandleEvents``) and runs our commands, every pjsua2 call and every callback happens
  on the same thread, so the Python state of the SIP adapters needs no locks at all. The cost
  is up to one poll interval (10 ms) of latency for a command, which a lamp does not notice.
- Every callback body is wrapped by :func:`guarded`: an exception is logged, never thrown
  back into C++ (that would abort).
- pjsua2 objects (Account, Buddy) are created and destroyed only on the pjsua thread; their
  Python owners keep them alive until then (a Buddy collected on another thread would call
  pjsua from an unregistered thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SipEndpoint", "SipEndpointError", "guarded", "split_hostport", "PJSUA2_MISSING"]

log = logging.getLogger("gateway.sip")

PJSUA2_MISSING = "pjsua2 is not installed for this Python: pip install pjsua2-python"

# Poll interval of the pjsua thread: how long libHandleEvents may wait for network events
# before the command queue is looked at again.
_POLL_MS = 10


class SipEndpointError(RuntimeError):
    """The SIP endpoint cannot start or is not running."""


def split_hostport(text: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def guarded(fn: Callable) -> Callable:
    """Wrap a pjsua2 callback: an exception escaping into C++ would abort the process."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - nothing may reach pjsua2
            log.exception("SIP callback %s failed", fn.__qualname__)
            return None

    return wrapper


_RX_RE = re.compile(r"^RX \d+ bytes Request msg (\w+)/cseq=\d+ .*?:\r?\n(.*?)\r?\n--end msg--",
                    re.S)


def _load_pjsua2() -> Any:
    try:
        import pjsua2  # noqa: PLC0415 - optional dependency, imported when started
    except ImportError as exc:
        raise SipEndpointError(PJSUA2_MISSING) from exc
    return pjsua2


class SipEndpoint:
    """One pjsua2 Endpoint with one UDP transport and one account, on its own thread.

    `bind` is ``[sources.sip] bind`` ("HOST:PORT"; port 0 picks a free one, see :attr:`port`).
    Registration is optional: with `registrar` (a SIP URI), `username` and `password_file`
    the account registers there with digest credentials; without, it is a local account
    ``sip:{user}@HOST:PORT`` that answers requests addressed to this transport.

    Hooks the adapters set (called on the pjsua thread, exceptions are logged):

    - :attr:`subscribe_handler`: ``fn(account, prm)`` for an incoming SUBSCRIBE (the BLF
      server); without one, SUBSCRIBEs get 403.
    - :meth:`add_rx_hook`: ``fn(method, raw_message)`` for every SIP request received, from
      pjsua's message log (the only place pjsua2 2.15 shows in-dialog requests such as a
      SUBSCRIBE refresh).
    """

    def __init__(
        self,
        bind: str = "127.0.0.1:5070",
        *,
        user: str = "blf-gateway",
        registrar: str | None = None,
        username: str | None = None,
        password_file: str | Path | None = None,
        realm: str = "*",
        user_agent: str = "blf-gateway",
        pj_log_level: int = 3,
    ) -> None:
        self.host, self.port = split_hostport(bind)
        self.user = user
        self.registrar = registrar
        self.username = username
        self.password_file = Path(password_file) if password_file else None
        self.realm = realm
        self.user_agent = user_agent
        self.pj_log_level = pj_log_level
        self.subscribe_handler: Callable[[Any, Any], None] | None = None
        self.registered: bool | None = None  # None: no registration configured
        self.pj: Any = None  # the pjsua2 module, once started
        self.ep: Any = None
        self.account: Any = None
        self._writer: Any = None
        self._rx_hooks: list[Callable[[str, str], None]] = []
        self._shutdown_hooks: list[Callable[[], None]] = []
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping = threading.Event()
        self._start_error: BaseException | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public, any thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._started.is_set()

    @property
    def uri(self) -> str:
        """The gateway's own SIP URI (the account's identity)."""
        if self.registrar:
            host = self.registrar.split(":", 1)[1].split(";")[0]
            return f"sip:{self.username or self.user}@{host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{self.user}@{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Create the library on a new thread; return when it listens (or raise why not)."""
        with self._lock:
            if self._thread is not None:
                return
            self.pj = _load_pjsua2()
            password = None
            if self.registrar:
                if not (self.username and self.password_file):
                    raise SipEndpointError("SIP registration needs username and password_file")
                try:
                    password = self.password_file.read_text().strip()
                except OSError as exc:
                    raise SipEndpointError(f"cannot read {self.password_file}: {exc}") from exc
            self._thread = threading.Thread(
                target=self._main, args=(password,), name="pjsua", daemon=True
            )
            self._thread.start()
        if not self._started.wait(timeout):
            raise SipEndpointError("the SIP endpoint did not start in time")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            err, self._start_error = self._start_error, None
            raise SipEndpointError(f"cannot start the SIP endpoint: {err}") from err

    def stop(self, timeout: float = 15.0) -> None:
        """Destroy the library and join the thread. Idempotent; safe before start."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.error("the pjsua thread did not stop within %.0f s", timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` on the pjsua thread; its result or exception in the future."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if not self.running or self._stopping.is_set():
            fut.set_exception(SipEndpointError("the SIP endpoint is not running"))
            return fut
        if threading.current_thread() is self._thread:
            self._execute(fn, args, fut)  # already there: no round trip (and no deadlock)
        else:
            self._commands.put((fn, args, fut))
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Awaitable :meth:`call` for the asyncio side."""
        return await asyncio.wrap_future(self.call(fn, *args))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the pjsua thread after `delay` seconds (pjsua thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), fn))

    def add_rx_hook(self, fn: Callable[[str, str], None]) -> None:
        if fn not in self._rx_hooks:
            self._rx_hooks.append(fn)

    def add_shutdown_hook(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the pjsua thread when the endpoint stops, before the account and
        the library go (adapters release their pjsua2 objects there)."""
        if fn not in self._shutdown_hooks:
            self._shutdown_hooks.append(fn)

    def remove_shutdown_hook(self, fn: Callable[[], None]) -> None:
        if fn in self._shutdown_hooks:
            self._shutdown_hooks.remove(fn)

    def remove_rx_hook(self, fn: Callable[[str, str], None]) -> None:
        if fn in self._rx_hooks:
            self._rx_hooks.remove(fn)

    # ------------------------------------------------------------------ pjsua thread

    @staticmethod
    def _execute(fn: Callable, args: tuple, fut: concurrent.futures.Future) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fut.set_exception(exc)

    def _main(self, password: str | None) -> None:
        pj = self.pj
        try:
            self._create(pj, password)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._start_error = exc
            self._destroy()
            self._started.set()
            return
        self._started.set()
        log.info("SIP endpoint listening on udp %s:%d as %s", self.host, self.port, self.uri)
        try:
            while not self._stopping.is_set():
                self._drain()
                try:
                    self.ep.libHandleEvents(_POLL_MS)
                except Exception:  # noqa: BLE001
                    log.exception("libHandleEvents failed")
                    time.sleep(_POLL_MS / 1000)
        finally:
            self._destroy()

    def _drain(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            guarded(fn)()
        while True:
            try:
                fn, args, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            self._execute(fn, args, fut)

    def _create(self, pj: Any, password: str | None) -> None:
        ep = pj.Endpoint()
        self.ep = ep
        # libCreate registers the calling thread with pjlib: this thread is pjsua's own.
        # (libIsThreadRegistered before libInit would itself abort: its mutex is not made yet.)
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # we poll: see the module docstring
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.userAgent = self.user_agent
        cfg.medConfig.threadCnt = 0  # no media: BLF only needs signalling
        # Level 4 carries pjsua's message log, which we read for in-dialog requests; the
        # writer forwards only levels <= pj_log_level to Python logging.
        self._writer = _LogWriter(pj, self)
        cfg.logConfig.writer = self._writer
        # consoleLevel gates the writer too (pjsua's log_writer), so both are set.
        cfg.logConfig.level = max(4, self.pj_log_level)
        cfg.logConfig.consoleLevel = max(4, self.pj_log_level)
        cfg.logConfig.msgLogging = True
        cfg.logConfig.decor = 0  # the bare message: no time, thread or sender prefixes
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = self.host
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        if self.port == 0:
            self.port = ep.transportGetInfo(tid).localName.rpartition(":")[2]
            self.port = int(self.port)
        ep.libStart()
        ep.audDevManager().setNullDev()
        acfg = pj.AccountConfig()
        acfg.idUri = self.uri
        if self.registrar:
            acfg.regConfig.registrarUri = self.registrar
            cred = pj.AuthCredInfo("digest", self.realm, self.username, 0, password)
            acfg.sipConfig.authCreds.append(cred)
            self.registered = False
        self.account = _Account(self)
        self.account.create(acfg, True)

    def _destroy(self) -> None:
        # Order matters: adapters' pjsua2 objects first (they run their cleanup commands
        # before stop), then the account, then the library; the LogWriter last.
        self._drain()
        for hook in reversed(self._shutdown_hooks):
            guarded(hook)()
        self._shutdown_hooks.clear()
        self._rx_hooks.clear()
        if self.account is not None:
            try:
                self.account.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("account shutdown failed")
            self.account = None
        if self.ep is not None:
            try:
                self.ep.libDestroy()
            except Exception:  # noqa: BLE001
                log.exception("libDestroy failed")
            self.ep = None
        self._writer = None
        log.info("SIP endpoint stopped")

    def _on_log(self, level: int, msg: str) -> None:
        if msg.startswith("RX ") and self._rx_hooks:
            m = _RX_RE.match(msg)
            if m:
                for hook in list(self._rx_hooks):
                    guarded(hook)(m.group(1), m.group(2))
        if level <= self.pj_log_level:
            log.log(logging.WARNING if level <= 2 else logging.DEBUG, "pjsua: %s",
                    msg.rstrip())


class _LogWriter:
    """Forwards pjsua's log to Python (the class is built lazily: pjsua2 is optional)."""

    def __new__(cls, pj: Any, endpoint: SipEndpoint) -> Any:
        class Writer(pj.LogWriter):
            def __init__(self) -> None:
                super().__init__()

            @guarded
            def write(self, entry: Any) -> None:
                if threading.current_thread() is endpoint._thread:
                    endpoint._on_log(entry.level, entry.msg)
                elif entry.level <= endpoint.pj_log_level:
                    log.debug("pjsua: %s", entry.msg.rstrip())

        return Writer()


def _Account(endpoint: SipEndpoint) -> Any:  # noqa: N802 - a class built lazily
    pj = endpoint.pj

    class Account(pj.Account):
        @guarded
        def onIncomingSubscribe(self, prm: Any) -> None:  # noqa: N802 - pjsua2 name
            handler = endpoint.subscribe_handler
            if handler is None:
                prm.code = 403
                prm.reason = "Forbidden"
                return
            try:
                handler(self, prm)
            except Exception:  # noqa: BLE001
                log.exception("SUBSCRIBE handler failed")
                prm.code = 500
                prm.reason = "Server Internal Error"

        @guarded
        def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 name
            ok = prm.code // 100 == 2 and prm.expiration > 0
            endpoint.registered = ok
            (log.info if ok else log.warning)(
                "SIP registration at %s: %d %s", endpoint.registrar, prm.code, prm.reason
            )

    return Account()
