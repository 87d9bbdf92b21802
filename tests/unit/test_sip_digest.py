"""Pure SIP digest: parsing, response computation (RFC 2617 example), nonces, verification."""

from __future__ import annotations

from gateway.auth import SIP_REALM, sip_ha1
from gateway.sip.digest import (
    DigestAuthenticator,
    digest_response,
    header_values,
    parse_digest,
    request_uri,
    uri_user,
)


def test_rfc2617_example():
    # RFC 2617 section 3.5: Mufasa / Circle Of Life
    ha1 = sip_ha1("Mufasa", "Circle Of Life", realm="testrealm@host.com")
    resp = digest_response(ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                           qop="auth", nc="00000001", cnonce="0a4f113b")
    assert resp == "6629fae49393a05397450978507c4ef1"


def test_parse_digest_quoted_and_bare_values():
    p = parse_digest('Digest username="alice", realm="blf-gateway", nonce="a.b", '
                     'uri="sip:201@gw", response="ff", algorithm=MD5, qop=auth, nc=00000001, '
                     'cnonce="x\\"y"')
    assert p == {"username": "alice", "realm": "blf-gateway", "nonce": "a.b",
                 "uri": "sip:201@gw", "response": "ff", "algorithm": "MD5", "qop": "auth",
                 "nc": "00000001", "cnonce": 'x"y'}
    assert parse_digest("Basic abc") is None
    assert parse_digest('Digest username="unterminated') is None


class Client:
    """What a phone does with a challenge."""

    def __init__(self, user, password, uri="sip:201@127.0.0.1:5070"):
        self.user, self.password, self.uri = user, password, uri
        self.nc = 0

    def answer(self, challenge: str, method="SUBSCRIBE", realm=SIP_REALM) -> str:
        p = parse_digest(challenge)
        self.nc += 1
        nc = f"{self.nc:08x}"
        resp = digest_response(sip_ha1(self.user, self.password, realm), method, self.uri,
                               p["nonce"], qop="auth", nc=nc, cnonce="c0ffee")
        return (f'Digest username="{self.user}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
                f'uri="{self.uri}", response="{resp}", algorithm=MD5, qop=auth, nc={nc}, '
                f'cnonce="c0ffee"')


STORE = {"alice": sip_ha1("alice", "s3cret")}


def test_right_password_authenticates_wrong_one_does_not():
    auth = DigestAuthenticator(SIP_REALM)
    ch = auth.challenge(100.0)
    assert 'qop="auth"' in ch and 'realm="blf-gateway"' in ch
    ok = auth.verify(Client("alice", "s3cret").answer(ch), "SUBSCRIBE", STORE.get, 101.0)
    assert ok.client == "alice"
    bad = auth.verify(Client("alice", "nope").answer(ch), "SUBSCRIBE", STORE.get, 101.0)
    assert bad.client is None and not bad.stale
    unknown = auth.verify(Client("mallory", "s3cret").answer(ch), "SUBSCRIBE", STORE.get, 101.0)
    assert unknown.client is None and not unknown.stale


def test_expired_nonce_is_stale_not_wrong():
    auth = DigestAuthenticator(SIP_REALM, lifetime=60)
    ch = auth.challenge(100.0)
    res = auth.verify(Client("alice", "s3cret").answer(ch), "SUBSCRIBE", STORE.get, 200.0)
    assert res.client is None and res.stale
    assert "stale=true" in auth.challenge(200.0, stale=True)


def test_forged_nonce_and_other_realm_are_refused():
    auth = DigestAuthenticator(SIP_REALM)
    other = DigestAuthenticator(SIP_REALM)  # another secret: its nonces are not ours
    res = auth.verify(Client("alice", "s3cret").answer(other.challenge(1.0)), "SUBSCRIBE",
                      STORE.get, 2.0)
    assert res.client is None and "nonce" in res.reason
    ch = auth.challenge(1.0).replace("blf-gateway", "evil")
    res = auth.verify(Client("alice", "s3cret").answer(ch, realm="evil"), "SUBSCRIBE",
                      STORE.get, 2.0)
    assert res.client is None


def test_replayed_request_is_refused():
    auth = DigestAuthenticator(SIP_REALM)
    header = Client("alice", "s3cret").answer(auth.challenge(1.0))
    assert auth.verify(header, "SUBSCRIBE", STORE.get, 2.0).client == "alice"
    again = auth.verify(header, "SUBSCRIBE", STORE.get, 3.0)
    assert again.client is None


def test_method_and_uri_are_bound():
    auth = DigestAuthenticator(SIP_REALM)
    header = Client("alice", "s3cret").answer(auth.challenge(1.0), method="REGISTER")
    assert auth.verify(header, "SUBSCRIBE", STORE.get, 2.0).client is None
    header = Client("alice", "s3cret").answer(auth.challenge(1.0))
    res = auth.verify(header, "SUBSCRIBE", STORE.get, 2.0, expected_uri="sip:202@127.0.0.1:5070")
    assert res.client is None


def test_legacy_digest_without_qop():
    auth = DigestAuthenticator(SIP_REALM)
    nonce = parse_digest(auth.challenge(1.0))["nonce"]
    resp = digest_response(STORE["alice"], "SUBSCRIBE", "sip:201@gw", nonce)
    header = (f'Digest username="alice", realm="blf-gateway", nonce="{nonce}", '
              f'uri="sip:201@gw", response="{resp}"')
    assert auth.verify(header, "SUBSCRIBE", STORE.get, 2.0).client == "alice"


def test_garbage_authorization_headers():
    auth = DigestAuthenticator(SIP_REALM)
    for h in ["", "Digest", "Digest ,,,", "Digest username=", 'Digest a="b"', "x" * 10000,
              'Digest username="alice", realm="blf-gateway", nonce="zz.zz", uri="u", '
              'response="r", qop=auth-int, nc=1, cnonce=c']:
        assert auth.verify(h, "SUBSCRIBE", STORE.get, 1.0).client is None


RAW = ("SUBSCRIBE sip:%32%30%31@127.0.0.1:5070 SIP/2.0\r\n"
       "Via: SIP/2.0/UDP 127.0.0.1:5062\r\n"
       "i: abc@host\r\n"
       "Authorization: Digest username=\"alice\",\r\n realm=\"blf-gateway\"\r\n"
       "Expires: 600\r\n\r\nbody: not a header\r\n")


def test_raw_message_helpers():
    assert request_uri(RAW) == ("SUBSCRIBE", "sip:%32%30%31@127.0.0.1:5070")
    assert uri_user("sip:%32%30%31@127.0.0.1:5070") == "201"
    assert uri_user("<sips:alice;x=y@h>") == "alice"
    assert uri_user("tel:201") is None and uri_user("sip:host") is None
    assert header_values(RAW, "Call-ID", "i") == ["abc@host"]
    assert header_values(RAW, "authorization") == [
        'Digest username="alice", realm="blf-gateway"']
    assert header_values(RAW, "body") == []
    assert request_uri("garbage") is None
