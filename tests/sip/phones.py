"""Desk phones for the tests, each a separate process (see tests/sip/deskphone.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gateway.sip.presence import parse_pidf

__all__ = ["DeskPhone", "DESKPHONE"]

DESKPHONE = Path(__file__).resolve().parent / "deskphone.py"


class DeskPhone:
    """A desk phone process; `events` holds what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, target: str, user: str | None = None, password: str | None = None):
        args = [sys.executable, str(DESKPHONE), "--target", target]
        if user:
            args += ["--user", user, "--password", password or ""]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.events.append(json.loads(line))

    def notes(self) -> list[str]:
        """The note of every PIDF body the phone received (parsed with the gateway's own
        safe parser: this also checks the bodies are well-formed)."""
        out = []
        for e in self.events:
            if e["event"] == "notify" and "active" in e["state"] and e["body"].strip():
                info = parse_pidf(e["body"])
                out.append(info.note)
        return out

    def codes(self) -> list[int]:
        return [e["code"] for e in self.events if e["event"] == "response"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
