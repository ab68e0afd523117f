"""How the MCU's Opus encoders protect what they send: in-band FEC that follows the receivers.

Opus in-band FEC (LBRR, RFC 6716 section 2.1.7) re-sends a coarse copy of each frame inside the
next packet, and the encoder spends bits on it in proportion to the packet-loss hint
(OPUS_SET_PACKET_LOSS_PERC). Those bits come out of the main signal: measured with speech here
(`bench/encoder_grid.py`), a 10 % hint costs 0.5 PESQ at 32 kb/s and 0.1-0.3 at 64 kb/s on a
clean network, while with 2-10 % loss FEC at a small hint (2-5 %) gains up to 1.5. So, as WebRTC
senders do, the hint follows what the receivers report (RTCP RR fraction lost, RFC 3550 6.4.1):

- each leg keeps a `LossEstimate` from its receiver reports: a rise is believed at once, a fall
  slowly (a lossy network is often lossy in bursts);
- the estimate puts the leg in a `FEC tier`: none below 1 %, a 3 % hint up to 6 %, a 5 % hint
  above (more than 5 % measured worse at every loss rate: the main signal loses more than the
  FEC gives back), with hysteresis so a leg does not flap;
- listeners share one encode per codec (a listener group); the group's encoder runs at the
  worst tier among its listeners, changed in place (no new encoder state for anyone to jump
  to). A talker's own encoder follows its own tier.
"""
from __future__ import annotations

from dataclasses import dataclass

# (enter at or above, leave below) loss percent, and the hint given to the encoder in that tier
FEC_TIERS = (
    # tier 0: no FEC
    (1.0, 0.5, 3),     # tier 1: some loss
    (6.0, 4.0, 5),     # tier 2: heavy loss
)
LOSS_DECAY = 0.7       # weight of the previous estimate when a report says less loss


@dataclass
class LossEstimate:
    """The loss a receiver reports about what we send it, smoothed: fast attack, slow release."""

    percent: float = 0.0
    tier: int = 0
    _seen: int = 0

    def update(self, reports: int, fraction_lost: int) -> bool:
        """Take the latest report block if it is new (`reports` counts them); True when the
        tier changed."""
        if reports == self._seen:
            return False
        self._seen = reports
        reported = fraction_lost * 100.0 / 256.0   # RFC 3550 6.4.1: fixed point, /256
        if reported >= self.percent:
            self.percent = reported
        else:
            self.percent = LOSS_DECAY * self.percent + (1.0 - LOSS_DECAY) * reported
        tier = self.tier
        while tier < len(FEC_TIERS) and self.percent >= FEC_TIERS[tier][0]:
            tier += 1
        while tier > 0 and self.percent < FEC_TIERS[tier - 1][1]:
            tier -= 1
        changed, self.tier = tier != self.tier, tier
        return changed


def tier_hint(tier: int) -> int:
    """The packet-loss hint (percent) an encoder of this tier runs with; 0 means FEC off."""
    return FEC_TIERS[tier - 1][2] if tier > 0 else 0
