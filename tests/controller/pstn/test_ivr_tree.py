"""Phone trees are checked when saved: every error names its node (dead ends, loops that need no
key press, unreachable nodes, references to missing nodes, bad fields); good trees round-trip.
Plus the pure parts of screening (hours, patterns, rates) and number normalisation."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings, strategies as st

from controller.pstn.ivr import PhoneTree, TreeError
from controller.pstn.numbers import RouteError, normalize, validate_route
from controller.pstn.screening import RateLimit, matches, parse_hours

pytestmark = pytest.mark.store_independent

GOOD = {"start": "welcome", "nodes": {
    "welcome": {"play": {"tone": 440, "ms": 300}, "next": "menu"},
    "menu": {"gather": {"prompt": {"file": "menu.wav"}, "digits": 1, "timeout_s": 3, "retries": 1},
             "branches": {"1": "sales", "2": "voicemail", "9": "welcome"}, "default": "menu",
             "no_input": "bye"},
    "sales": {"transfer": {"call": "abc"}},
    "voicemail": {"record": {"prompt": {"silence_ms": 200}, "max_s": 30, "finish_on": "#"}, "next": "bye"},
    "bye": {"hangup": {"prompt": {"recording": "r1"}}}}}


def broken(path: list, value) -> dict:
    tree = copy.deepcopy(GOOD)
    target = tree
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return tree


def test_a_good_tree_round_trips():
    tree = PhoneTree.parse(GOOD)
    assert PhoneTree.parse(tree.to_json()).to_json() == tree.to_json()
    assert tree.nodes["menu"].branches == {"1": "sales", "2": "voicemail", "9": "welcome"}


@pytest.mark.parametrize("path, value, node, words", [
    (["nodes", "welcome", "next"], None, "welcome", "dead end"),                 # play without next
    (["nodes", "welcome", "next"], "nowhere", "welcome", "not a node"),
    (["nodes", "menu", "branches"], {}, "menu", "branches"),
    (["nodes", "menu", "branches", "12"], "sales", "menu", "up to 1"),          # 2 keys, digits 1
    (["nodes", "menu", "gather", "timeout_s"], 0, "menu", "timeout_s"),
    (["nodes", "menu", "gather", "colour"], "red", "menu", "unknown gather"),
    (["nodes", "sales", "transfer"], {"queue": "x"}, "sales", "transfer"),
    (["nodes", "welcome", "play"], {"file": "../../etc/passwd.wav"}, "welcome", "plain name"),
    (["nodes", "welcome", "play"], {"tone": 9000}, "welcome", "50..4000"),
    (["nodes", "extra"], {"hangup": {}}, "extra", "never reached"),
    (["nodes", "bye", "hangup", "then"], 1, "bye", "unknown hangup"),
    (["start"], "nope", None, "start"),
])
def test_bad_trees_are_refused_naming_the_node(path, value, node, words):
    with pytest.raises(TreeError) as caught:
        PhoneTree.parse(broken(path, value))
    assert caught.value.node == node and words in str(caught.value)


def test_loops_without_a_key_press_are_refused():
    loop = {"start": "a", "nodes": {"a": {"play": {"tone": 400}, "next": "b"},
                                    "b": {"play": {"tone": 500}, "next": "a"}}}
    with pytest.raises(TreeError) as caught:
        PhoneTree.parse(loop)
    assert caught.value.node in ("a", "b")
    assert "dead end" in str(caught.value)   # nothing ends it: caught as a dead end first
    # a menu whose no-input path plays and comes back goes round for ever with nobody pressing
    quiet = broken(["nodes", "menu", "no_input"], "welcome")
    with pytest.raises(TreeError) as caught:
        PhoneTree.parse(quiet)
    assert "without any key press" in str(caught.value)
    # coming back after a key press is the caller's choice: fine (GOOD has 9 -> welcome)
    PhoneTree.parse(GOOD)


def test_routes_and_numbers():
    assert validate_route({"call": "abc"}) == {"call": "abc"}
    with pytest.raises(RouteError) as caught:
        validate_route({"ivr": broken(["nodes", "welcome", "next"], None)})
    assert caught.value.field == "route.ivr.welcome"
    with pytest.raises(RouteError):
        validate_route({"call": "a", "user": "b"})
    assert normalize("+1 (555) 010-0199") == "+15550100199"
    assert normalize("0015550100199") == "+15550100199"
    assert normalize("15550100199") == "+15550100199"
    assert normalize("+15550100199;npdi") == "+15550100199"
    assert normalize("anonymous") is None and normalize("123") is None and normalize(None) is None


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 5000) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["start", "nodes", "a", "b", "play", "gather", "next",
                                         "branches", "hangup", "transfer", "record", "tone",
                                         "prompt", "default", "no_input", "1"]), inner, max_size=5),
                    max_leaves=20))
def test_any_json_is_a_tree_or_a_tree_error(value):
    try:
        tree = PhoneTree.parse(value)
    except TreeError:
        return
    assert PhoneTree.parse(tree.to_json()).to_json() == tree.to_json()


def test_screening_parts():
    assert parse_hours("22-07") == frozenset({22, 23, 0, 1, 2, 3, 4, 5, 6})
    assert parse_hours("") == frozenset()
    assert matches("+1900*", "+19005550000") and not matches("+1900*", "+15550000000")
    assert matches("anonymous", None) and not matches("+1555", None)
    limit = RateLimit(2, 60.0)
    assert [limit.take("x", 0.0) for _ in range(3)] == [True, True, False]
    assert limit.take("x", 30.0)   # one back after half a minute
    # a caller that read the clock earlier but takes later (it awaited in between) costs one token,
    # never the tokens of the time between the two readings
    trunk = RateLimit(100, 1.0)
    assert trunk.take("t", 10.0)
    assert [trunk.take("t", 9.0) for _ in range(100)] == [True] * 99 + [False]
