"""The one registry of fuzz targets, shared by the atheris runner and the CI test.

A target is a function that builds its fixtures once and returns the per-input check
(`bytes -> None`). The check raises only on a real defect: an exception type the parser must not
raise, or a broken invariant (round-trip, accounting). Targets live in modules listed in
TARGET_MODULES; other parts of the product (controller, TURN) add their module there.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

# Modules that register targets when imported. Controller and TURN targets add theirs here.
TARGET_MODULES = [
    "tests.fuzz.targets_media",
    "tests.fuzz.targets_engine",
    "tests.fuzz.targets_webrtc",
    "tests.fuzz.targets_recording",
]


@dataclass
class FuzzTarget:
    name: str
    summary: str
    setup: Callable[[], Callable[[bytes], None]]
    # inputs the fuzzer starts from (valid packets, offers...), so it explores past the first check
    seeds: Callable[[], list[bytes]] = field(default=lambda: [])
    max_len: int = 4096


# Packages whose Python code atheris instruments for coverage (compiled modules are not).
INSTRUMENT = ("mixer", "controller")

TARGETS: dict[str, FuzzTarget] = {}


def target(name: str, summary: str, *, seeds: Callable[[], list[bytes]] | None = None, max_len: int = 4096):
    """Decorator registering `setup` as fuzz target `name`."""
    def register(setup: Callable[[], Callable[[bytes], None]]):
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} registered twice")
        TARGETS[name] = FuzzTarget(name, summary, setup, seeds or (lambda: []), max_len)
        return setup
    return register


def load_all() -> dict[str, FuzzTarget]:
    if os.environ.get("VOICEMIX_FUZZ_CANARY") == "1":  # proves the harness reports what it finds
        importlib.import_module("tests.fuzz.canary")
    for module in TARGET_MODULES:
        importlib.import_module(module)
    return TARGETS


class InvariantBroken(AssertionError):
    """A target's check found a real defect (not merely a rejected input)."""
