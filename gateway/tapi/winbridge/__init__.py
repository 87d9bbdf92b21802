"""blf-tapi-bridge: the Windows program that reports TAPI lines to the gateway.

It opens the TAPI lines of a Windows PBX server (any TAPI 2.x telephony service provider)
with monitor privilege, follows their calls through ``lineGetMessage`` and sends the bridge
lines of the gateway contract (section 5) over TCP to ``[sources.tapi_bridge]``. See
docs/tapi-bridge.md.

Layers, outermost first:

- :mod:`.cli` and :mod:`.service`: the command line and the Windows service;
- :mod:`.link`: the gateway connection (reconnects, full state on every connect, commands
  back from the gateway), asyncio;
- :mod:`.driver`: the live TAPI message loop in its own thread, over :mod:`.tapi32` (thin
  ctypes on tapi32.dll, behind the :class:`.tapi32.TapiApi` interface);
- :mod:`.trace`: replay of recorded or written TAPI message traces instead of the driver;
- :mod:`.translate` (pure): TAPI messages and LINECALLINFO -> bridge lines;
- :mod:`.callinfo` (pure): the readers of TAPI's variable-size structures over bytes;
- :mod:`.structs`, :mod:`.constants`: the Windows header's layouts and values.
"""
