"""Configuration reload: the file is watched; a good new version is applied live.

:class:`ConfigWatcher` looks at the file's modification time and size twice a second. A
changed file is parsed and checked in full (:func:`~gateway.config.load_config`): an invalid
one is refused with every reason logged and the last good configuration stays; a valid one
with a new digest goes to `apply`. :func:`restart_needed` says which changes only take effect
after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from .config import Config, ConfigError, load_config
from .store import RedisError

__all__ = ["ConfigWatcher", "reload_refusal", "restart_needed", "POLL_SECONDS"]

log = logging.getLogger("gateway")

POLL_SECONDS = 0.5


def reload_refusal(old: Config, new: Config) -> str | None:
    """Why a valid file must still not replace the running configuration, or None.

    An editor saving in place empties the file first: for a moment it parses as a valid
    configuration with no devices and no clients. Applying that would drop every
    subscription (and nothing would restore them when the file comes back), so a file that
    loses all devices or all clients of a running gateway is refused; removing them all
    takes a restart.
    """
    if old.devices and not new.devices:
        return "it has no devices while the running configuration has some"
    if old.clients and not new.clients:
        return "it has no clients while the running configuration has some"
    return None


def restart_needed(old: Config, new: Config) -> list[str]:
    """The parts of a new configuration that a running gateway cannot take over live."""
    out = [f"[{key}]" for key in ("redis", "state")
           if getattr(old, key) != getattr(new, key)]
    if _without_live(old) != _without_live(new):
        out.append("[sources]")
    for key in ("listen", "tls_cert", "tls_key", "admin_client_ca", "log_format"):
        if getattr(old.server, key) != getattr(new.server, key):
            out.append(f"server.{key}")
    return out


def _without_live(cfg: Config) -> object:
    """[sources] without what applies live: the bridge allow-list and secret file are read
    for every new bridge connection."""
    bridge = cfg.sources.tapi_bridge
    if bridge is None:
        return cfg.sources
    return cfg.sources.model_copy(
        update={"tapi_bridge": bridge.model_copy(update={"allow": [], "secret_file": None})})


class ConfigWatcher:
    """Watches `path`; `current()` is the configuration in force, `apply(new)` installs one."""

    def __init__(self, path: Path, current: Callable[[], Config],
                 apply: Callable[[Config], Awaitable[None]], metrics: Counter[str]) -> None:
        self.path = path
        self._current = current
        self._apply = apply
        self.metrics = metrics
        self._now = asyncio.Event()
        # The last reload's outcome, for the admin view: {"t", "ok", "errors", "changed"}.
        self.last: dict | None = None

    def reload_now(self) -> None:
        """Re-read the file at once, even if its modification time did not change (SIGHUP,
        `systemctl reload`)."""
        self._now.set()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    async def run(self) -> None:
        """Poll the file until cancelled."""
        seen = self._stamp()
        previous = seen
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                async with asyncio.timeout(POLL_SECONDS):
                    await self._now.wait()
            except TimeoutError:
                pass
            forced = self._now.is_set()
            self._now.clear()
            now = self._stamp()
            # Read a changed file once it has stayed the same for a poll: not in the middle
            # of a save that takes several writes.
            settled = now == previous
            previous = now
            if (now == seen or not settled) and not forced:
                continue
            seen = now
            if forced:
                log.info("reload requested (SIGHUP): re-reading %s", self.path)
            try:
                outcome = await self.reload()
                if forced and outcome["ok"] and not outcome["changed"]:
                    log.info("configuration unchanged")
            except (RedisError, OSError) as exc:
                log.error("configuration change not applied (Redis away: %s); will retry", exc)
                seen = None

    async def reload(self) -> dict:
        """Read the file now and apply it if it is valid and new; returns (and keeps in
        `last`) the outcome: ok, the errors of a refused file, whether anything changed.
        RedisError/OSError: valid, but it could not be applied now."""
        t = time.time()
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("configuration %s NOT applied, keeping the last good one:\n  %s",
                      self.path, "\n  ".join(exc.errors))
            self.metrics["config_rejected"] += 1
            self.last = {"t": t, "ok": False, "errors": list(exc.errors), "changed": False}
            return self.last
        refusal = reload_refusal(self._current(), new)
        if refusal is not None:
            log.error("configuration %s NOT applied, keeping the last good one: %s "
                      "(write configuration files whole: to a new file, then rename it)",
                      self.path, refusal)
            self.metrics["config_rejected"] += 1
            self.last = {"t": t, "ok": False, "errors": [refusal], "changed": False}
            return self.last
        if new.digest == self._current().digest:
            self.last = {"t": t, "ok": True, "errors": [], "changed": False}
            return self.last
        await self._apply(new)
        self.last = {"t": t, "ok": True, "errors": [], "changed": True}
        return self.last
