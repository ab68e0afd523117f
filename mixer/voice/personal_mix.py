"""A listener's own mix when they set the gain at which they hear other participants ("I hear Bob
too loud"). Everyone else keeps the shared mix and its one encode; only a listener whose gains
change what they would hear pays for a mix and an encode of their own."""
from __future__ import annotations

import numpy as np

# Gains a listener may set, in dB: from nearly silent to a strong boost.
MIN_GAIN_DB = -60.0
MAX_GAIN_DB = 20.0


class PersonalMix:
    """The gains one listener hears talkers at (talker leg id -> linear gain, 1.0 when unset)."""

    def __init__(self) -> None:
        self.gains_db: dict[str, float] = {}
        self._linear: dict[str, float] = {}
        self._weights = np.zeros(0, dtype=np.float32)
        self._out = np.zeros(0, dtype=np.float32)
        self.mixes = 0

    def set(self, talker_id: str, gain_db: float | None) -> None:
        """Set (or with None, clear) the gain for one talker; the range is checked by the caller's
        API (MIN_GAIN_DB..MAX_GAIN_DB)."""
        if gain_db is None:
            self.gains_db.pop(talker_id, None)
            self._linear.pop(talker_id, None)
        else:
            self.gains_db[talker_id] = float(gain_db)
            self._linear[talker_id] = float(10 ** (gain_db / 20))

    def forget(self, talker_id: str) -> None:
        self.set(talker_id, None)

    def __bool__(self) -> bool:
        return bool(self._linear)

    def weights(self, row_ids: list[str | None], own_row: int | None) -> np.ndarray | None:
        """The weight of every mixed row for this listener (their own row 0: mix-minus), or None
        when every weight is 1 and they hear exactly the shared mix (or their plain mix-minus)."""
        linear = self._linear
        if not any(talker in linear for talker in row_ids if talker is not None):
            return None
        if len(self._weights) != len(row_ids):
            self._weights = np.ones(len(row_ids), dtype=np.float32)
        weights = self._weights
        for row, talker in enumerate(row_ids):
            weights[row] = linear.get(talker, 1.0) if talker is not None else 1.0
        if own_row is not None:
            weights[own_row] = 0.0
        return weights

    def mix(self, stack: np.ndarray, weights: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Weighted sum of the mixed rows into `out` (int16), saturating like the shared mix."""
        self.mixes += 1
        acc = weights @ stack.astype(np.float32)
        np.clip(acc, -32768.0, 32767.0, out=acc)
        np.copyto(out, acc, casting="unsafe")
        return out
