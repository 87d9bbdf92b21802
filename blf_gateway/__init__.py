"""Client-side tools for the BLF gateway: :mod:`blf_gateway.client` (asyncio WebSocket client)."""

__all__ = ["client"]
