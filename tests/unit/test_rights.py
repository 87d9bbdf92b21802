"""Rights: overrides per member, and how rights combine where several apply to one device."""

from gateway.config import parse_config
from gateway.panels.rights import combined_rights, panel_rights, visible_panels

CFG = parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "1"
[[devices]]
id = "2"
[[clients]]
name = "owner"
devices = ["1"]
[[clients]]
name = "w"
monitor = [ { device = "1", clip = false, pickup = true } ]
[[clients]]
name = "x"
[[groups]]
name = "a"
members = ["owner", "w", "x"]
rights = { numbers = "inbound", pickup = false }
overrides = [ { client = "x", visible = false } ]
[[groups]]
name = "b"
members = ["owner", "w"]
rights = { numbers = "none", calls = false }
""")


def test_override_replaces_only_what_it_sets():
    g = CFG.group_by_name["a"]
    assert panel_rights(g, "w").numbers == "inbound"
    assert visible_panels(CFG, "x") == []
    assert visible_panels(CFG, "w") == ["a", "b"]


def test_most_permissive_right_wins_on_one_device():
    r = combined_rights(CFG, "w", "1")
    assert r.numbers == "inbound"  # group a beats monitor clip=false and group b's none
    assert r.pickup is True  # from the monitor right
    assert r.calls is True  # group b says no, group a and the monitor say yes
    assert combined_rights(CFG, "owner", "1").numbers == "all"  # own device
    assert combined_rights(CFG, "w", "2") is None  # nobody's device, no monitor right


def test_numbers_of_a_lamp_only_right_never_add_to_another_rights_calls():
    cfg = parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "1"
[[clients]]
name = "owner"
devices = ["1"]
[[clients]]
name = "w"
[[groups]]
name = "lamps"
members = ["owner", "w"]
rights = { calls = false, numbers = "all" }
[[groups]]
name = "plain"
members = ["owner", "w"]
rights = { numbers = "none" }
""")
    r = combined_rights(cfg, "w", "1")
    assert r.calls is True and r.numbers == "none"
