"""TLS for the gateway's own ports: checked PEM files, and renewal without a restart.

:func:`check_pair` reads a certificate and its key and says in one sentence what is wrong
(missing file, not PEM, key does not match, expired, not yet valid). :class:`TlsFiles` keeps one
:class:`ssl.SSLContext` for a listener and loads renewed files into it when they change on
disk: new connections get the new certificate, connected clients keep their session. A bad
new pair is refused (logged) and the last good one stays in use.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsError", "CertInfo", "cert_info", "check_pair", "TlsFiles"]

log = logging.getLogger("gateway.tls")


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the text says why."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime


def cert_info(path: str | Path) -> CertInfo:
    """Subject and validity of the first certificate in a PEM file."""
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsError(f"{path}: not a PEM certificate") from None
    return CertInfo(cert.subject.rfc4514_string(), cert.not_valid_before_utc,
                    cert.not_valid_after_utc)


def check_pair(cert: str | Path, key: str | Path, now: dt.datetime | None = None) -> CertInfo:
    """Raise TlsError unless `cert` and `key` make a usable pair, valid at `now`."""
    info = cert_info(cert)
    now = now or dt.datetime.now(dt.timezone.utc)
    if info.not_after <= now:
        raise TlsError(f"{cert}: the certificate expired on {info.not_after:%Y-%m-%d %H:%M} "
                       "UTC: renew it")
    if info.not_before > now:
        raise TlsError(f"{cert}: the certificate is not valid before "
                       f"{info.not_before:%Y-%m-%d %H:%M} UTC")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert, key)
    return info


def _load_chain(ctx: ssl.SSLContext, cert: str | Path, key: str | Path) -> None:
    if not Path(key).is_file():
        raise TlsError(f"{key}: no such key file")
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        if "mismatch" in reason:
            raise TlsError(f"{key}: this key does not belong to the certificate {cert}") \
                from None
        raise TlsError(f"{cert} / {key}: cannot be used: {reason}") from None
    except OSError as exc:
        raise TlsError(f"{cert} / {key}: cannot read: {exc.strerror or exc}") from None


def _stamp(paths: list[Path]) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class TlsFiles:
    """A server-side SSLContext made from PEM files, renewed in place when they change.

    `client_ca`: with `require_client_cert`, every client must present a certificate signed
    by it; without, one is asked for but optional (checked per request, e.g. for /metrics).
    """

    def __init__(self, cert: str | Path, key: str | Path, client_ca: str | Path | None = None,
                 *, require_client_cert: bool = False, name: str = "TLS") -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.client_ca = Path(client_ca) if client_ca else None
        self.require_client_cert = require_client_cert
        self.name = name
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_ca is not None:
            try:
                self.context.load_verify_locations(cafile=str(self.client_ca))
            except (ssl.SSLError, OSError) as exc:
                raise TlsError(f"{self.client_ca}: not a usable CA file: {exc}") from None
            self.context.verify_mode = (ssl.CERT_REQUIRED if require_client_cert
                                        else ssl.CERT_OPTIONAL)
        self.info = check_pair(self.cert, self.key)
        _load_chain(self.context, self.cert, self.key)
        self._seen = _stamp([self.cert, self.key])
        self.reloads = 0

    def changed(self) -> bool:
        return _stamp([self.cert, self.key]) != self._seen

    def reload(self) -> bool:
        """Load the files again if they changed; True if the new pair is now in use. A pair
        that is incomplete (a renewal half written), mismatched or expired is refused and
        the last good one kept; it is tried again at the next change."""
        stamp = _stamp([self.cert, self.key])
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            info = check_pair(self.cert, self.key)
            _load_chain(self.context, self.cert, self.key)
        except TlsError as exc:
            log.error("%s certificate NOT renewed, still serving the previous one: %s",
                      self.name, exc)
            return False
        self.info = info
        self.reloads += 1
        log.info("%s certificate renewed: %s, valid until %s", self.name, info.subject,
                 f"{info.not_after:%Y-%m-%d %H:%M} UTC")
        return True
