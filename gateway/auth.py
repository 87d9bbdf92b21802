"""Password hashing (scrypt), checking in constant time, and generated passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "hash_password",
    "verify_password",
    "generate_password",
    "new_token",
    "sip_ha1",
    "SIP_REALM",
    "DUMMY_HASH",
]

# scrypt cost: N=2**14, r=8, p=1 (about 16 MiB and ~50 ms here): the interactive-login
# parameters recommended for scrypt. Stored with the hash, so they can be raised later.
_N, _R, _P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024**2,
                            dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash from :func:`hash_password` (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 1024**2, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked against when the client does not exist or has no password, so that a wrong client
# name costs the same time as a wrong password and says nothing about which it was.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))

_WORDS_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_password(length: int = 14) -> str:
    """A random password without look-alike characters (no 0/O, 1/l/I)."""
    return "".join(secrets.choice(_WORDS_ALPHABET) for _ in range(length))


def new_token() -> str:
    return secrets.token_urlsafe(32)


# Realm of the gateway's own SIP digest challenges (the BLF server for desk phones).
SIP_REALM = "blf-gateway"


def sip_ha1(client: str, password: str, realm: str = SIP_REALM) -> str:
    """HA1 = MD5(user:realm:password) of RFC 2617/3261 digest, the only form in which SIP
    digest authentication can check a password. Stored beside the scrypt hash; like it, it
    is never sent anywhere."""
    return hashlib.md5(f"{client}:{realm}:{password}".encode()).hexdigest()  # noqa: S324
