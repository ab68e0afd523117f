"""The ICE-lite agent (RFC 8445 lite, RFC 7675 consent) against hand-built Binding requests."""
from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings, strategies as st

from mixer.legs.ice import (
    CONSENT_TIMEOUT_S, MAX_VALIDATED_ADDRESSES, IceCredentials, IceError, IceLiteAgent,
)
from mixer.turn import stun

LOCAL = IceCredentials("LoCa", "localpasswordlocalpassw")
REMOTE = IceCredentials("ReMo", "remotepasswordremotepas")
PEER = ("192.0.2.10", 50000)


def _request(*, ufrag: str = "LoCa:ReMo", password: str = LOCAL.pwd, use_candidate: bool = False,
             extra: list | None = None, method: int = stun.BINDING, fingerprint: bool = True,
             integrity: bool = True) -> bytes:
    attributes = [(stun.USERNAME, ufrag.encode()), (stun.PRIORITY, b"\x6e\x00\x01\xff"),
                  (stun.ICE_CONTROLLING, secrets.token_bytes(8))]
    if use_candidate:
        attributes.append((stun.USE_CANDIDATE, b""))
    attributes += extra or []
    return stun.build(method, stun.REQUEST, secrets.token_bytes(12), attributes,
                      key=password.encode() if integrity else None, fingerprint=fingerprint)


def _agent() -> IceLiteAgent:
    return IceLiteAgent(LOCAL, REMOTE)


def test_a_valid_check_gets_an_authenticated_success_with_the_mapped_address() -> None:
    agent = _agent()
    response = stun.parse(agent.receive(_request(), PEER, 0.0))
    assert response.cls == stun.SUCCESS and response.method == stun.BINDING
    assert response.xor_address(stun.XOR_MAPPED_ADDRESS) == PEER
    assert stun.check_integrity(response, LOCAL.pwd.encode())
    assert agent.is_validated(PEER) and agent.selected is None
    assert agent.state(0.0) == "checking"


def test_use_candidate_nominates_and_the_newest_nomination_wins() -> None:
    agent = _agent()
    agent.receive(_request(use_candidate=True), PEER, 0.0)
    assert agent.selected == PEER and agent.state(1.0) == "connected"
    other = ("198.51.100.7", 40000)
    agent.receive(_request(use_candidate=True), other, 2.0)
    assert agent.selected == other and agent.selected_changes == 1


@pytest.mark.parametrize("kwargs, code", [
    ({"password": "wrongpasswordwrongpassw"}, 401),
    ({"ufrag": "NoSuch:ReMo"}, 401),
    ({"ufrag": "LoCa:SomeoneElse"}, 401),
    ({"ufrag": "LoCa"}, 401),
    ({"integrity": False}, 400),
    ({"fingerprint": False}, 400),
])
def test_checks_that_do_not_authenticate_get_400_or_401_without_integrity(kwargs, code) -> None:
    agent = _agent()
    response = stun.parse(agent.receive(_request(**kwargs), PEER, 0.0))
    assert response.cls == stun.ERROR and response.error_code()[0] == code
    assert response.get(stun.MESSAGE_INTEGRITY) is None
    assert not agent.is_validated(PEER) and agent.checks == 0


def test_unknown_comprehension_required_attribute_gets_420_listing_it() -> None:
    response = stun.parse(_agent().receive(_request(extra=[(0x7777, b"x")]), PEER, 0.0))
    assert response.error_code()[0] == 420
    assert response.get(stun.UNKNOWN_ATTRIBUTES) == b"\x77\x77"
    assert stun.check_integrity(response, LOCAL.pwd.encode())


def test_a_peer_that_also_claims_the_controlled_role_gets_487() -> None:
    request = _request(extra=[(stun.ICE_CONTROLLED, secrets.token_bytes(8))])
    response = stun.parse(_agent().receive(request, PEER, 0.0))
    assert response.error_code()[0] == stun.ROLE_CONFLICT


def test_indications_responses_and_garbage_get_no_answer() -> None:
    agent = _agent()
    indication = stun.build(stun.BINDING, stun.INDICATION, secrets.token_bytes(12), [])
    response = stun.build(stun.BINDING, stun.SUCCESS, secrets.token_bytes(12), [])
    assert agent.receive(indication, PEER, 0.0) is None and agent.indications == 1
    assert agent.receive(response, PEER, 0.0) is None and agent.errors["not_a_request"] == 1
    assert agent.receive(b"\x00\x01garbage", PEER, 0.0) is None and agent.errors["malformed"] == 1


def test_consent_expires_30_s_after_the_last_valid_check_and_comes_back_with_one() -> None:
    agent = _agent()
    agent.receive(_request(use_candidate=True), PEER, 100.0)
    assert agent.consent(100.0 + CONSENT_TIMEOUT_S - 0.1)
    assert not agent.consent(100.0 + CONSENT_TIMEOUT_S + 0.1)
    assert agent.state(200.0) == "disconnected" and agent.consent_losses == 1
    agent.receive(_request(), PEER, 201.0)
    assert agent.consent(201.5) and agent.state(201.5) == "connected"


def test_ice_restart_refuses_old_credentials_and_keeps_the_selected_address() -> None:
    agent = _agent()
    agent.receive(_request(use_candidate=True), PEER, 0.0)
    agent.receive(_request(), ("192.0.2.99", 1), 0.0)
    new_local, new_remote = IceCredentials("NeWl", "newlocalpasswordnewloc"), IceCredentials("NeWr", "newremotepasswordnewre")
    agent.restart(new_local, new_remote)
    assert agent.selected == PEER and agent.is_validated(PEER)
    assert not agent.is_validated(("192.0.2.99", 1))
    assert stun.parse(agent.receive(_request(), PEER, 1.0)).error_code()[0] == 401
    ok = agent.receive(_request(ufrag="NeWl:NeWr", password=new_local.pwd, use_candidate=True), PEER, 1.0)
    assert stun.parse(ok).cls == stun.SUCCESS and agent.restarts == 1


def test_validated_addresses_are_bounded_and_never_forget_the_selected_one() -> None:
    agent = _agent()
    agent.receive(_request(use_candidate=True), PEER, 0.0)
    for port in range(1, 3 * MAX_VALIDATED_ADDRESSES):
        agent.receive(_request(), ("203.0.113.5", port), float(port))
    assert len(agent.validated) == MAX_VALIDATED_ADDRESSES
    assert agent.is_validated(PEER)


def test_generated_credentials_follow_rfc_8839() -> None:
    credentials = IceCredentials.generate().validate()
    assert len(credentials.ufrag) >= 4 and len(credentials.pwd) >= 22
    with pytest.raises(IceError):
        IceCredentials("a b!", "short").validate()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_answered_or_dropped_never_raised(data: bytes) -> None:
    agent = _agent()
    response = agent.receive(data, PEER, 0.0)
    assert response is None or stun.parse(response).cls == stun.ERROR
    assert agent.checks == 0 and agent.selected is None
