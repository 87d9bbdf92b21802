"""What the TAPI bridge tests share: an office of three lines and two watchers' clients.

Lines 201-203 ("Line 201" ...) belong to alice, bob and carol; dan watches them in the group
"office" with `numbers = "all"`, nina in the group "quiet" with `numbers = "none"`; both log
in with conftest.PW.
"""

from __future__ import annotations

from conftest import HASH, gateway_config, toml_table


def office_config(redis_url: str, bridge_port: int) -> str:
    """The office's gateway configuration, its bridge port `bridge_port`."""
    people = ["alice", "bob", "carol"]
    return gateway_config(
        redis_url, bridge=f"127.0.0.1:{bridge_port}", lines=("201", "202", "203"),
        owners=tuple(people), device_keys=lambda n: {"line": f"Line {n}"},
        client_keys={"alice": {"first_name": "Alice", "last_name": "Archer"}},
        more=toml_table("[[clients]]", name="dan", password_hash=HASH)
        + toml_table("[[clients]]", name="nina", password_hash=HASH)
        + toml_table("[[groups]]", name="office", members=[*people, "dan"],
                     rights={"numbers": "all"})
        + toml_table("[[groups]]", name="quiet", members=[*people, "nina"],
                     rights={"numbers": "none"}))
