"""The Asterisk Manager Interface line source: `protocol` (pure framing), `translate` (pure:
events -> core reports), `client` (the asyncio connection)."""
