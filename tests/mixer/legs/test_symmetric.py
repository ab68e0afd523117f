"""`SymmetricRtp`'s rule as properties over any sequence of arriving media (issue 18)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mixer.legs.symmetric import LATCHED, OFFERED, WAITING, SymmetricRtp

OFFERED_RTP, OFFERED_RTCP = ("10.0.0.1", 4000), ("10.0.0.1", 4001)
HOSTS = ("10.0.0.1", "198.51.100.7", "203.0.113.9")

events = st.lists(st.tuples(st.sampled_from(HOSTS), st.integers(1024, 1030), st.booleans(),
                            st.booleans()), max_size=30)


@given(events, st.booleans())
@settings(max_examples=400, deadline=None)
def test_media_goes_only_where_media_came_from(sequence, rtcp_mux):
    state = SymmetricRtp(OFFERED_RTP, OFFERED_RTP if rtcp_mux else OFFERED_RTCP, rtcp_mux)
    sent_from: set[str] = set()
    for host, port, rtcp, authenticated in sequence:
        if not state.accepts(host) and not authenticated:
            continue  # the leg drops it as a stranger before telling SymmetricRtp
        before = (state.state, state.rtp)
        state.on_media((host, port), rtcp, authenticated)
        sent_from.add(host)
        if state.state == WAITING:
            assert state.rtp is None and state.rtcp is None
        else:
            assert state.rtp[0] in sent_from and state.rtcp[0] == state.rtp[0]
        if state.state == OFFERED:
            assert state.rtp == OFFERED_RTP
        if before[0] != WAITING and state.rtp[0] != before[1][0] and state.rtp[0] != OFFERED_RTP[0]:
            # moved to another host, not the offered one: only authenticated RTP can do that
            assert authenticated and not rtcp
        if rtcp and host != OFFERED_RTP[0]:
            assert before[0] == LATCHED or state.state == before[0]  # RTCP never latches a host


def test_the_offered_host_wins_and_reoffers_keep_consent_only_on_that_host():
    state = SymmetricRtp(OFFERED_RTP, OFFERED_RTCP, False)
    assert state.on_media(("198.51.100.7", 5000), False, False)  # behind NAT: latched
    assert (state.state, state.rtp, state.rtcp) == (LATCHED, ("198.51.100.7", 5000),
                                                    ("198.51.100.7", 5001))
    assert not state.accepts("203.0.113.9")                     # a third host is a stranger now
    assert not state.on_media(("203.0.113.9", 7000), False, False)
    assert state.on_media(("10.0.0.1", 6000), False, False)     # the offered host takes it back
    assert (state.state, state.rtp) == (OFFERED, OFFERED_RTP)
    state.reoffer(("10.0.0.1", 4100), ("10.0.0.1", 4101))       # same host: consent kept
    assert state.consented and state.rtp == ("10.0.0.1", 4100)
    state.reoffer(("192.0.2.50", 4000), ("192.0.2.50", 4001))   # another host: wait again
    assert state.state == WAITING and state.rtp is None
