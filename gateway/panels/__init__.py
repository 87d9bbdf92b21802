"""The pure BLF core: lamp rules, the engine (states -> views), rights (views -> audiences)."""
