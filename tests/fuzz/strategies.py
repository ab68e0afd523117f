"""Hypothesis strategies shared by the property tests: arbitrary bytes, and valid inputs mutated."""
from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw, seeds: list[bytes], max_edits: int = 4) -> bytes:
    """One of `seeds` after a few byte-level edits (flip, overwrite, insert, delete, truncate,
    duplicate a chunk): inputs that get past the first checks, where the deeper bugs live."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_edits))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(("flip", "byte", "insert", "delete", "truncate", "repeat")))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte":
            data[at] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255)))))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif edit == "truncate":
            del data[at:]
        else:
            end = min(len(data), at + draw(st.integers(1, 16)))
            data[at:at] = data[at:end]
    return bytes(data)


def inputs(seeds: list[bytes], max_size: int = 512):
    """Arbitrary bytes or mutated seeds, half and half."""
    return st.one_of(st.binary(max_size=max_size), mutated(seeds))
