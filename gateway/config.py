"""The admin's TOML configuration (contract section 3): pydantic models, full validation.

:func:`load_config` returns a :class:`Config` or raises :class:`ConfigError` carrying every
problem found, each as ``key.path: reason``. Relative paths in the file (state dir, secret
files) are taken relative to the file's own folder.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "Config",
    "ConfigError",
    "DeviceCfg",
    "ClientCfg",
    "GroupCfg",
    "RightsCfg",
    "MonitorCfg",
    "load_config",
    "parse_config",
    "parse_hostport",
]


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists each problem as "key: reason"."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


Name = Annotated[str, Field(min_length=1, max_length=128)]


def _check_hostport(v: str) -> str:
    parse_hostport(v)
    return v


def _check_origin(v: str) -> str:
    if v == "*":
        return v
    scheme, sep, rest = v.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise ValueError(f"expected an origin like https://board.example.org[:PORT] or '*', "
                         f"got {v!r}")
    return v.lower()


def _check_network(v: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or CIDR network, got {v!r}") from None
    return v


def _tls_pair(cert: str | None, key: str | None) -> None:
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together: give both or neither")


class ServerCfg(_Model):
    listen: str = "127.0.0.1:8765"
    # PEM files: when both are given the one port serves https:// and wss:// (re-read when
    # they change, so a renewed certificate is used without a restart).
    tls_cert: str | None = None
    tls_key: str | None = None
    # Optional: /metrics answers only clients presenting a certificate signed by this CA.
    admin_client_ca: str | None = None
    # Origins a browser page may open a WebSocket from; None: the gateway's own origin only.
    # A request without Origin (a CTI program, not a browser) is always allowed.
    allowed_origins: list[Annotated[str, AfterValidator(_check_origin)]] | None = None
    log_format: Literal["text", "json"] = "text"
    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    messages_per_second: float = Field(20.0, gt=0)  # per connection, sustained
    message_burst: int = Field(60, ge=1)
    # Per logged-in client, over all its connections in this process: opening more sockets
    # does not buy more. Changes (softphone reports, presence, selected device) are what
    # every watcher of the client receives, so they have a budget of their own.
    client_messages_per_second: float = Field(40.0, gt=0)
    client_message_burst: int = Field(120, ge=1)
    client_changes_per_second: float = Field(5.0, gt=0)
    client_change_burst: int = Field(30, ge=1)
    max_subscriptions: int = Field(500, ge=1)  # per connection
    login_attempts_per_minute: int = Field(20, ge=1)  # failed logins per remote address
    # Reverse proxies / load balancers whose X-Forwarded-For is believed (IPs or networks).
    trusted_proxies: list[str] = Field(default_factory=list, max_length=1000)
    token_idle_seconds: int = Field(8 * 3600, ge=60)
    queue_limit: int = Field(10000, ge=100)  # pending messages per client before cut-off
    # A connection that has not logged in after this long is closed (a login takes one
    # round trip; the web panel connects when its login form is sent).
    login_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    # WebSocket connections from one address at a time: generous, so that 200 switchboards
    # behind one NAT (a few tabs each) get in, while one host cannot hold thousands.
    max_connections_per_address: int = Field(1000, ge=1)

    _v_listen = field_validator("listen")(_check_hostport)

    @model_validator(mode="after")
    def _tls(self) -> "ServerCfg":
        _tls_pair(self.tls_cert, self.tls_key)
        if self.admin_client_ca is not None and self.tls_cert is None:
            raise ValueError("admin_client_ca needs tls_cert and tls_key (client "
                             "certificates exist only over TLS)")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for item in v:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return v


class RedisCfg(_Model):
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise ValueError("expected a redis://, rediss://, unix:// or redis+sentinel:// URL")
        return v


class StateCfg(_Model):
    dir: str = "./state"


class TapiBridgeCfg(_Model):
    listen: str = "127.0.0.1:7001"
    max_line_bytes: int = Field(65536, ge=256)
    # A bridge's first line must be {"auth": SECRET} with the secret in this file.
    secret_file: str | None = None
    # Addresses / CIDR networks bridges may connect from; empty: any.
    allow: list[Annotated[str, AfterValidator(_check_network)]] = []
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # bridges must present a certificate signed by it

    _v_listen = field_validator("listen")(_check_hostport)

    @model_validator(mode="after")
    def _tls(self) -> "TapiBridgeCfg":
        _tls_pair(self.tls_cert, self.tls_key)
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


class AmiCfg(_Model):
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str
    secret_file: str
    pickup: Literal["redirect", "pickupchan"] = "redirect"
    context: str = "default"


class SipCfg(_Model):
    # The BLF server for desk phones: UDP here, TCP and TLS where given.
    bind: str = "127.0.0.1:5070"
    tcp: str | None = None
    tls: str | None = None
    tls_cert: str | None = None  # PEM certificate chain (TLS)
    tls_key: str | None = None  # PEM private key (TLS)
    # Outgoing TLS (lines with sips: or ;transport=tls): verify the PBX's certificate against
    # the system's CAs or `tls_ca`; false only for a lab PBX with a self-signed certificate.
    tls_verify: bool = True
    tls_ca: str | None = None
    # Who watches SIP lines: the gateway's own SIP layer on `bind` ("native"), or the pjsua2
    # user agent on `agent_bind` (default: bind's host, a free port; presence only).
    watcher: Literal["native", "pjsua2"] = "native"
    agent_bind: str | None = None
    # A line's subscription is refreshed at least this often, so that a PBX that restarted
    # and forgot us is noticed within it (native watcher).
    probe_seconds: float = Field(10.0, ge=1.0, le=600.0)
    # PUBLISH every target's lamp to a presence server (e.g. "sip:kamailio.example:5060"),
    # as sip:TARGET@publish_domain (default: publish_to's host), in these event packages.
    publish_to: str | None = None
    publish_domain: str | None = None
    publish_events: list[Literal["dialog", "presence"]] = ["dialog", "presence"]
    # Digest credentials for the PBX (SUBSCRIBE and PUBLISH challenges, registration)
    registrar: str | None = None
    username: str | None = None
    password_file: str | None = None

    _v_bind = field_validator("bind")(_check_hostport)

    @field_validator("tcp", "tls", "agent_bind")
    @classmethod
    def _v_optional_hostport(cls, v: str | None) -> str | None:
        return None if v is None else _check_hostport(v)

    @model_validator(mode="after")
    def _v_tls(self) -> SipCfg:
        if self.tls and not (self.tls_cert and self.tls_key):
            raise ValueError("tls needs tls_cert and tls_key (PEM files)")
        return self


class SourcesCfg(_Model):
    tapi_bridge: TapiBridgeCfg | None = None
    ami: AmiCfg | None = None
    sip: SipCfg | None = None


SOURCES = ("tapi_bridge", "ami", "sip")


class DeviceCfg(_Model):
    id: Name
    name: str = ""
    number: str = ""
    source: Literal["tapi_bridge", "ami", "sip"] = "tapi_bridge"
    line: str | None = None
    # SIP lines: the event package the gateway subscribes to (dialog: RFC 4235, with
    # direction, remote number and name, and call identities where the PBX sends them).
    sip_event: Literal["presence", "dialog"] = "presence"
    computer: str | None = None
    journal: bool = False

    @property
    def line_name(self) -> str:
        """The source's own name for this device (default: its id)."""
        return self.line or self.id


class BlfCfg(_Model):
    devices: Literal["all", "current", "first"] = "all"
    softphone: bool = True


class MonitorCfg(_Model):
    device: Name
    clip: bool = False
    pickup: bool = False


class ClientCfg(_Model):
    name: Name
    type: Literal["computer", "user", "nologin"] = "user"
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    number: str = ""
    sip_user: str = ""
    department: str = ""
    devices: list[Name] = []
    offline_monitor: bool = False
    devices_by_computer: bool = False
    journal: Literal["", "r", "w", "rw"] = ""
    blf: BlfCfg = BlfCfg()
    monitor: list[MonitorCfg] = []
    # A hash made by `blf-gateway password` (scrypt); never a clear-text password.
    password_hash: str | None = None
    # May open the admin view (sources, processes, sessions, every device and its
    # provenance). Numbers there still follow this client's rights.
    admin: bool = False

    @property
    def display(self) -> str:
        full = f"{self.first_name} {self.last_name}".strip()
        return full or self.name


class RightsCfg(_Model):
    """What members of a group may see of each other. Defaults are the cautious ones."""

    visible: bool = True
    calls: bool = True
    numbers: Literal["none", "inbound", "all"] = "none"
    pickup: bool = False
    presence: bool = True


class RightsOverride(_Model):
    """A member's own rights in one group: what it sets replaces the group's."""

    client: Name
    visible: bool | None = None
    calls: bool | None = None
    numbers: Literal["none", "inbound", "all"] | None = None
    pickup: bool | None = None
    presence: bool | None = None


class GroupCfg(_Model):
    name: Name
    members: list[Name] = []
    rights: RightsCfg = RightsCfg()
    overrides: list[RightsOverride] = []

    def rights_of(self, client: str) -> RightsCfg:
        """The rights `client` holds in this group: the group's, with its override applied."""
        for o in self.overrides:
            if o.client == client:
                changes = {k: v for k, v in o.model_dump(exclude={"client"}).items()
                           if v is not None}
                return self.rights.model_copy(update=changes)
        return self.rights


class JournalCfg(_Model):
    retention_days: float = Field(90.0, gt=0)  # server journal entries older than this go
    max_entries: int = Field(100000, ge=100)  # and the journal never holds more than this
    offline_max_entries: int = Field(1000, ge=10)  # per client, oldest dropped beyond


class PresenceCfg(_Model):
    # CSV of admin-set statuses (id, client, status, start, end, info, set by), re-read when
    # it changes; relative to the configuration file.
    import_file: str | None = None


class PickupCfg(_Model):
    """How a pickup is carried out where the PBX cannot do it for us (a softphone picker).

    `dial`: the dial string sent to the picker's phone in the `action` message; placeholders
    {number} (the target device's number), {sip_user} (the target client's sip_user) and
    {device} (the target device id). `**{number}` is Asterisk's usual directed pickup."""

    dial: str = "**{number}"
    claim_seconds: int = Field(30, ge=1, le=600)  # how long one picker holds a ringing call

    @field_validator("dial")
    @classmethod
    def _dial(cls, v: str) -> str:
        try:
            v.format(number="1", sip_user="u", device="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"unknown placeholder or bad format: {exc}") from None
        return v


class ProvenanceCfg(_Model):
    """Lamp provenance: how many source reports are kept per device (and per softphone),
    in Redis, for `blf-gateway explain` and the admin view."""

    keep: int = Field(50, ge=0, le=1000)  # 0: provenance off


class Config(_Model):
    server: ServerCfg = ServerCfg()
    provenance: ProvenanceCfg = ProvenanceCfg()
    pickup: PickupCfg = PickupCfg()
    journal: JournalCfg = JournalCfg()
    presence: PresenceCfg = PresenceCfg()
    redis: RedisCfg | None = None
    state: StateCfg = StateCfg()
    sources: SourcesCfg = SourcesCfg()
    devices: list[DeviceCfg] = []
    clients: list[ClientCfg] = []
    groups: list[GroupCfg] = []

    # Set by load_config: where relative paths start, and a digest of the file's content.
    base_dir: str = "."
    digest: str = ""

    _device_by_id: dict[str, DeviceCfg] = PrivateAttr(default_factory=dict)
    _client_by_name: dict[str, ClientCfg] = PrivateAttr(default_factory=dict)
    _group_by_name: dict[str, GroupCfg] = PrivateAttr(default_factory=dict)
    _owners_by_device: dict[str, list[ClientCfg]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: object) -> None:
        self._device_by_id = {d.id: d for d in self.devices}
        self._client_by_name = {c.name: c for c in self.clients}
        self._group_by_name = {g.name: g for g in self.groups}
        # owners_of runs for every call that ends (journals) and in rights checks: an
        # index instead of a walk over every client.
        owners: dict[str, list[ClientCfg]] = {}
        for c in self.clients:
            for d in dict.fromkeys(c.devices):
                owners.setdefault(d, []).append(c)
        self._owners_by_device = owners

    # The indexes are read straight from pydantic's private dict: `self._device_by_id` goes
    # through a __getattr__ that costs microseconds, and these are read for every change
    # the engine applies and every call that ends.

    @property
    def device_by_id(self) -> dict[str, DeviceCfg]:
        return self.__pydantic_private__["_device_by_id"]  # type: ignore[index]

    @property
    def client_by_name(self) -> dict[str, ClientCfg]:
        return self.__pydantic_private__["_client_by_name"]  # type: ignore[index]

    @property
    def group_by_name(self) -> dict[str, GroupCfg]:
        return self.__pydantic_private__["_group_by_name"]  # type: ignore[index]

    def path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(self.base_dir) / path

    def groups_of(self, client: str) -> list[GroupCfg]:
        return [g for g in self.groups if client in g.members]

    def owners_of(self, device: str) -> list[ClientCfg]:
        """Clients that have `device` among their main devices."""
        return list(self.__pydantic_private__["_owners_by_device"].get(device, ()))  # type: ignore[index]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _reason(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _dupes(items: list[str]) -> set[str]:
    return {k for k, n in Counter(items).items() if n > 1}


def _entries(table: str, items: list, key: str, what: str
             ) -> Iterator[tuple[int, Any, list[str]]]:
    """(index, entry, its error if its `key` stands earlier in the list too) for each entry
    of a list (the first one of each is fine: the error names the later copies, where the
    admin would delete)."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, key)
        yield i, item, ([f"{table}[{i}].{key}: duplicate {what} {value!r}"] if value in seen
                        else [])
        seen.add(value)


def _references(where: str, names: list[str], known: set[str], what: str) -> list[str]:
    """Errors of a list that names other entries (a client's devices, a group's members):
    each name must exist, and stand once."""
    errors = [f"{where}[{j}]: unknown {what} {n!r}" for j, n in enumerate(names)
              if n not in known]
    errors += [f"{where}: {what} {n!r} is listed twice" for n in _dupes(names)]
    return errors


def _cross_check(cfg: Config) -> list[str]:
    errors: list[str] = []
    configured = {s for s in SOURCES if getattr(cfg.sources, s) is not None}

    lines: dict[tuple[str, str], str] = {}
    for i, d, again in _entries("devices", cfg.devices, "id", "device id"):
        errors += again
        if d.source not in configured:
            errors.append(
                f"devices[{i}].source: source {d.source!r} is not configured "
                f"(add a [sources.{d.source}] section)"
            )
        if (d.sip_event == "dialog" and d.source == "sip" and cfg.sources.sip is not None
                and cfg.sources.sip.watcher == "pjsua2"):
            errors.append(f"devices[{i}].sip_event: dialog needs [sources.sip] "
                          'watcher = "native" (pjsua2 watches presence only)')
        key = (d.source, d.line_name)
        if key in lines and lines[key] != d.id:
            errors.append(
                f"devices[{i}].line: line {d.line_name!r} of source {d.source!r} "
                f"is already device {lines[key]!r}"
            )
        lines.setdefault(key, d.id)

    devices = {d.id for d in cfg.devices}
    for i, c, again in _entries("clients", cfg.clients, "name", "client name"):
        errors += again
        errors += _references(f"clients[{i}].devices", c.devices, devices, "device")
        for j, m in enumerate(c.monitor):
            if m.device not in devices:
                errors.append(f"clients[{i}].monitor[{j}].device: unknown device {m.device!r}")
        if c.devices_by_computer and c.type == "nologin":
            errors.append(f"clients[{i}].devices_by_computer: client {c.name!r} is of type "
                          "nologin and never logs in from a computer")
        if c.type == "nologin" and c.password_hash:
            errors.append(
                f"clients[{i}].password_hash: client {c.name!r} is of type nologin "
                "and can never log in, so it cannot have a password"
            )
        if c.password_hash and not c.password_hash.startswith("scrypt$"):
            errors.append(
                f"clients[{i}].password_hash: not a hash made by 'blf-gateway password' "
                "(clear-text passwords are never accepted in the configuration)"
            )

    clients = {c.name for c in cfg.clients}
    for i, g, again in _entries("groups", cfg.groups, "name", "group name"):
        errors += again
        errors += _references(f"groups[{i}].members", g.members, clients, "client")
        for j, o in enumerate(g.overrides):
            if o.client not in g.members:
                errors.append(f"groups[{i}].overrides[{j}].client: {o.client!r} is not a "
                              f"member of group {g.name!r}")
    return errors


def parse_config(text: str, *, base_dir: str | Path = ".", source: str = "config") -> Config:
    """Validate a configuration given as TOML text; raise ConfigError with every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    for i, c in enumerate(raw.get("clients", []) if isinstance(raw.get("clients"), list) else []):
        if isinstance(c, dict) and "password" in c:
            raise ConfigError(
                [
                    f"clients[{i}].password: passwords never stand in the configuration in clear "
                    "text; set them with 'blf-gateway password CLIENT --config FILE'"
                ]
            )
    for key in ("base_dir", "digest"):
        raw.pop(key, None)
    try:
        cfg = Config.model_validate(
            {
                **raw,
                "base_dir": str(base_dir),
                "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
            }
        )
    except ValidationError as exc:
        raise ConfigError([f"{_loc(e['loc'])}: {_reason(e)}" for e in exc.errors()]) from None
    errors = _cross_check(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, base_dir=path.resolve().parent, source=str(path))
