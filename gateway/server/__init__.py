"""The WebSocket and HTTP side: sessions, fan-out, wire messages."""
