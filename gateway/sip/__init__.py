"""SIP through pjsua2: the presence line source and the BLF server for desk phones."""
