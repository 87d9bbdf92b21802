"""Configuration validation: every problem named by its key path, all of them at once."""

import pytest

from gateway.config import ConfigError, load_config, parse_config

GOOD = """
[server]
listen = "127.0.0.1:8765"

[sources.tapi_bridge]
listen = "127.0.0.1:7001"

[[devices]]
id = "201"
number = "201"
line = "Line 201"

[[devices]]
id = "202"

[[clients]]
name = "alice"
devices = ["201"]
monitor = [ { device = "202", clip = true } ]

[[clients]]
name = "lobby"
type = "nologin"
devices = ["202"]

[[groups]]
name = "sales"
members = ["alice", "lobby"]
rights = { numbers = "inbound", pickup = true }
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    return exc.value.errors


def test_good_config_and_defaults():
    cfg = parse_config(GOOD)
    assert cfg.client_by_name["alice"].blf.devices == "all"
    assert cfg.client_by_name["alice"].blf.softphone is True
    assert cfg.device_by_id["202"].line_name == "202"  # line defaults to the id
    assert cfg.group_by_name["sales"].rights.numbers == "inbound"
    assert cfg.group_by_name["sales"].rights.visible is True
    assert cfg.redis is None  # embedded Redis


@pytest.mark.parametrize(
    "change,expected",
    [
        (('listen = "127.0.0.1:8765"', 'listen = "8765"'),
         'server.listen: expected HOST:PORT, got \'8765\''),
        (('[server]', '[server]\ncolour = "blue"'), "server.colour: unknown key"),
        (('id = "202"', 'id = 202'), "devices[1].id: Input should be a valid string"),
        (('type = "nologin"', 'type = "robot"'),
         "clients[1].type: Input should be 'computer', 'user' or 'nologin'"),
        (('numbers = "inbound"', 'numbers = "some"'),
         "groups[0].rights.numbers: Input should be 'none', 'inbound' or 'all'"),
        (('devices = ["201"]', 'devices = ["201", "999"]'),
         "clients[0].devices[1]: unknown device '999'"),
        (('members = ["alice", "lobby"]', 'members = ["alice", "zed"]'),
         "groups[0].members[1]: unknown client 'zed'"),
        (('id = "202"', 'id = "201"'), "devices[1].id: duplicate device id '201'"),
        (('monitor = [ { device = "202", clip = true } ]', 'monitor = [ { device = "x" } ]'),
         "clients[0].monitor[0].device: unknown device 'x'"),
        (('type = "nologin"', 'type = "nologin"\npassword_hash = "scrypt$16384$8$1$aa$bb"'),
         "clients[1].password_hash: client 'lobby' is of type nologin and can never log in, "
         "so it cannot have a password"),
        (('name = "alice"', 'name = "alice"\npassword = "hunter2"'),
         "clients[0].password: passwords never stand in the configuration in clear text; "
         "set them with 'blf-gateway password CLIENT --config FILE'"),
        (('[sources.tapi_bridge]', '[sources.ami]\nusername = "x"\nsecret_file = "s"\n'
          '[sources.tapi]'), "sources.tapi: unknown key"),
        (('line = "Line 201"', 'line = "Line 201"\nsource = "ami"'),
         "devices[0].source: source 'ami' is not configured (add a [sources.ami] section)"),
        (('[[devices]]\nid = "202"', '[[devices]]\nid = "202"\nline = "Line 201"'),
         "devices[1].line: line 'Line 201' of source 'tapi_bridge' is already device '201'"),
        (('name = "sales"', 'name = "sales"\n[[groups]]\nname = "sales"'),
         "groups[1].name: duplicate group name 'sales'"),
        (('name = "lobby"', 'name = "alice"'), "clients[1].name: duplicate client name 'alice'"),
        (('devices = ["201"]', 'devices = ["201", "201"]'),
         "clients[0].devices: device '201' is listed twice"),
        (('members = ["alice", "lobby"]', 'members = ["lobby", "alice", "lobby"]'),
         "groups[0].members: client 'lobby' is listed twice"),
    ],
)
def test_each_error_names_key_and_reason(change, expected):
    old, new = change
    assert old in GOOD
    errors = errors_of(GOOD.replace(old, new, 1))
    assert expected in errors, errors


def test_all_problems_are_reported_together():
    text = GOOD.replace('devices = ["201"]', 'devices = ["201", "x1", "x2"]').replace(
        'members = ["alice", "lobby"]', 'members = ["alice", "nobody"]')
    errors = errors_of(text)
    assert len(errors) == 3


def test_not_toml():
    [err] = errors_of("[server\nlisten=1")
    assert err.startswith("config: not valid TOML:")


def test_missing_required_key():
    errors = errors_of("[sources.ami]\nusername = 'blf'\n")
    assert errors == ["sources.ami.secret_file: required key is missing"]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "cannot read" in exc.value.errors[0]


def test_relative_paths_start_at_the_config_file(tmp_path):
    (tmp_path / "g.toml").write_text('[state]\ndir = "data"\n')
    cfg = load_config(tmp_path / "g.toml")
    assert cfg.path(cfg.state.dir) == tmp_path / "data"
