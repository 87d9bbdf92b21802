"""SIP through pjsua2: presence line source and BLF server for desk phones (planned)."""
