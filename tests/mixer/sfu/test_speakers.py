"""SpeakerSelector: last-N and dominant speaker from RFC 6464 levels, without flapping."""
from __future__ import annotations

from mixer.sfu.speakers import SILENT_LEVEL, SpeakerSelector


def _run(selector: SpeakerSelector, ticks: int, levels: dict) -> list:
    """`levels`: source -> level every tick (None = no packet). Returns `selected` after each tick."""
    history = []
    for _ in range(ticks):
        for source, level in levels.items():
            selector.observe(source, level)
        selector.tick()
        history.append(list(selector.selected))
    return history


def _selector(sources, **kwargs) -> SpeakerSelector:
    selector = SpeakerSelector(**kwargs)
    for source in sources:
        selector.add(source)
    return selector


def test_the_loud_three_of_six_are_chosen() -> None:
    selector = _selector("abcdef")
    _run(selector, 50, {"a": 20, "b": 90, "c": 25, "d": SILENT_LEVEL, "e": 30, "f": None})
    assert sorted(selector.selected) == ["a", "c", "e"]
    assert selector.dominant == "a"


def test_nobody_is_chosen_for_noise_below_the_voice_threshold() -> None:
    selector = _selector("ab")
    _run(selector, 50, {"a": 70, "b": 60})
    assert selector.selected == [] and selector.dominant is None


def test_a_cough_does_not_take_a_slot() -> None:
    selector = _selector("abcd", last_n=2)
    _run(selector, 50, {"a": 30, "b": 30, "c": SILENT_LEVEL, "d": SILENT_LEVEL})
    changes = selector.changes
    _run(selector, 2, {"a": 30, "b": 30, "c": 5, "d": SILENT_LEVEL})       # 40 ms burst
    _run(selector, 20, {"a": 30, "b": 30, "c": SILENT_LEVEL, "d": SILENT_LEVEL})
    assert sorted(selector.selected) == ["a", "b"] and selector.changes == changes


def test_a_new_talker_takes_the_slot_of_one_who_went_quiet_quickly() -> None:
    selector = _selector("abc", last_n=2)
    _run(selector, 50, {"a": 30, "b": 30, "c": SILENT_LEVEL})
    history = _run(selector, 100, {"a": 30, "b": None, "c": 30})  # b stops, c starts
    took = next(i for i, chosen in enumerate(history) if "c" in chosen)
    assert took * 20 <= 140, f"c waited {took * 20} ms for a slot"
    assert sorted(selector.selected) == ["a", "c"]


def test_a_sitting_speaker_is_not_replaced_by_one_just_as_loud() -> None:
    selector = _selector("abc", last_n=2)
    _run(selector, 50, {"a": 30, "b": 30, "c": SILENT_LEVEL})
    _run(selector, 100, {"a": 30, "b": 30, "c": 29})  # c talks too, barely louder
    assert sorted(selector.selected) == ["a", "b"]


def test_dominant_speaker_does_not_flap_between_two_who_alternate_fast() -> None:
    selector = _selector("ab")
    for _ in range(20):  # 200 ms turns: faster than anyone holds the floor
        _run(selector, 10, {"a": 20, "b": SILENT_LEVEL})
        _run(selector, 10, {"a": SILENT_LEVEL, "b": 20})
    assert selector.dominant_changes <= 2


def test_dominant_speaker_moves_to_one_who_holds_the_floor() -> None:
    selector = _selector("ab")
    _run(selector, 100, {"a": 20, "b": SILENT_LEVEL})
    assert selector.dominant == "a"
    history = []
    for _ in range(150):
        _run(selector, 1, {"a": SILENT_LEVEL, "b": 20})
        history.append(selector.dominant)
    changed_at = history.index("b")
    assert 15 <= changed_at <= 100, f"dominant moved after {changed_at * 20} ms"


def test_removed_sources_leave_the_choice() -> None:
    selector = _selector("ab")
    _run(selector, 30, {"a": 20, "b": 25})
    selector.remove("a")
    assert selector.selected == ["b"] and selector.dominant is None
    _run(selector, 5, {"b": 25})
    assert selector.dominant == "b"


def test_crosstalk_by_a_fourth_voice_must_last_to_displace_a_talker() -> None:
    selector = _selector("abcd")
    _run(selector, 50, {"a": 30, "b": 30, "c": 30, "d": SILENT_LEVEL})
    # d talks much louder, over everyone, for 120 ms: not enough
    _run(selector, 6, {"a": 30, "b": 30, "c": 30, "d": 5})
    assert "d" not in selector.selected
    # and keeps talking: after the hold it is in, in place of one of the others
    _run(selector, 20, {"a": 30, "b": 30, "c": 30, "d": 5})
    assert "d" in selector.selected and len(selector.selected) == 3


def test_contended_only_while_more_talk_than_there_are_places() -> None:
    """Claims decide who is heard (and are worth checking) only when talkers outnumber places."""
    selector = _selector("abcd", last_n=2)
    _run(selector, 20, {"a": 20, "b": 25, "c": SILENT_LEVEL, "d": None})
    assert not selector.contended              # two talk, two places: a quiet hiss is no talker
    _run(selector, 3, {"a": 20, "b": 25, "c": 30, "d": None})
    assert selector.contended                  # a third voice waits for a place
    _run(selector, 100, {"a": 20, "b": None, "c": None, "d": None})
    assert not selector.contended              # the others went quiet: their scores decayed
