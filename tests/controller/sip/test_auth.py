"""Digest authentication against the published vectors (RFC 2617 3.5, RFC 7616 3.9.1) and the
verifier's round trip for every algorithm RFC 8760 brings to SIP."""
from __future__ import annotations

import pytest

from controller.sip.auth import (
    DigestChallenge, DigestVerifier, authorization, choose_challenge, digest_response,
    parse_auth_params, supported,
)
from controller.sip.errors import SipParseError
from controller.sip.message import Headers, SipResponse

RFC7616 = dict(realm="http-auth@example.org", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


pytestmark = pytest.mark.store_independent   # the SIP stack and its peers: no store involved


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1(algorithm, expected):
    challenge = DigestChallenge(algorithm=algorithm, qop=["auth", "auth-int"], **RFC7616)
    assert digest_response(challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html",
                           cnonce=CNONCE, nc=1, qop="auth") == expected
    header = authorization(challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce=CNONCE)
    _, params = parse_auth_params(header)
    assert params["response"] == expected and params["qop"] == "auth" and params["nc"] == "00000001"
    assert params["opaque"] == RFC7616["opaque"] and params["algorithm"] == algorithm


def test_rfc2617_section_3_5():
    challenge = DigestChallenge(realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                                qop=["auth", "auth-int"], opaque="5ccc069c403ebaf9f0171e9517f40e41")
    assert digest_response(challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
                           cnonce="0a4f113b", nc=1, qop="auth") == "6629fae49393a05397450978507c4ef1"


def test_parse_challenge_and_pick_the_first_supported():
    headers = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="n1", algorithm=SHA-512-256-unknown'),
                       ("WWW-Authenticate", 'Digest realm="a", nonce="n2", algorithm=SHA-256, qop="auth,auth-int", stale=TRUE'),
                       ("WWW-Authenticate", 'Digest realm="a", nonce="n3", algorithm=MD5')])
    chosen = choose_challenge(SipResponse(401, headers=headers))
    assert chosen.nonce == "n2" and chosen.algorithm == "SHA-256" and chosen.stale
    assert chosen.qop == ["auth", "auth-int"]
    with pytest.raises(SipParseError):
        DigestChallenge.parse('Basic realm="x"')
    with pytest.raises(SipParseError):
        DigestChallenge.parse('Digest realm="x"')


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256"])
def test_verifier_accepts_right_and_refuses_wrong_passwords(algorithm):
    if not supported(algorithm):
        pytest.skip(f"{algorithm} not in this OpenSSL")
    verifier = DigestVerifier("trunk.example", {"alice": "s3cret"}, algorithm=algorithm)
    challenge = DigestChallenge.parse(verifier.challenge())
    good = authorization(challenge, "alice", "s3cret", "INVITE", "sip:+15550100@trunk.example")
    assert verifier.verify(good, "INVITE") == "ok"
    assert verifier.verify(good, "BYE") == "bad"   # the method is part of the digest
    bad = authorization(challenge, "alice", "guess", "INVITE", "sip:+15550100@trunk.example")
    assert verifier.verify(bad, "INVITE") == "bad"
    forged = good.replace(challenge.nonce, "0." + "0" * 24)
    assert verifier.verify(forged, "INVITE") == "bad"


def test_verifier_reports_stale_nonces():
    verifier = DigestVerifier("r", {"u": "p"}, nonce_ttl_s=-1)
    challenge = DigestChallenge.parse(verifier.challenge())
    assert verifier.verify(authorization(challenge, "u", "p", "INVITE", "sip:x"), "INVITE") == "stale"


def test_auth_int_hashes_the_body():
    challenge = DigestChallenge(realm="r", nonce="n", qop=["auth-int"], algorithm="SHA-256")
    one = authorization(challenge, "u", "p", "INVITE", "sip:x", body=b"v=0", cnonce="c")
    two = authorization(challenge, "u", "p", "INVITE", "sip:x", body=b"v=1", cnonce="c")
    assert "qop=auth-int" in one and one != two
