"""Login flood from its own process (so that the attacker's work is not the gateway's):
`flood_program.py PORT N CONCURRENCY` tries N logins, every other one a wrong password for
alice, the rest sprayed unknown names; prints the reply codes as one JSON list."""

import asyncio
import json
import sys

import websockets


async def main(port: int, n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    codes: list[str] = []

    async def one(i: int) -> None:
        who = "alice" if i % 2 else f"nobody{i}"
        async with sem:
            try:
                # A generous handshake: the attacker's own slowness on a loaded machine is
                # not what the test is about (a timeout here would be counted as a reply).
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                              open_timeout=60) as ws:
                    await ws.send(json.dumps({"type": "login", "id": 1, "client": who,
                                              "password": f"guess-{i}"}))
                    codes.append(json.loads(await ws.recv()).get("code", "welcome"))
            except (OSError, websockets.WebSocketException) as exc:
                codes.append(type(exc).__name__)

    await asyncio.gather(*[one(i) for i in range(n)])
    print(json.dumps(codes))


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
