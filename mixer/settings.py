"""Engine settings in one typed place; every field can come from a `VOICEMIX_<NAME>` variable.

Defaults run embedded on loopback with no configuration at all.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """Media engine settings (VOICEMIX_MEDIA_IP, VOICEMIX_MEDIA_PORTS, ...)."""

    model_config = SettingsConfigDict(env_prefix="VOICEMIX_", extra="ignore")

    media_ip: str = "127.0.0.1"
    media_ports: str = "40000-49999"
    control_listen: str = "127.0.0.1:8790"
    # Conference mixing (MCU)
    max_speakers: int = Field(8, ge=1, le=32, description="talkers mixed at once; above this many, the loudest")
    speaker_level_threshold: int = Field(
        60, ge=0, le=127, description="RFC 6464 level (-dBov) at or below which a sender is talking")
    speaker_hangover_ms: int = Field(300, ge=0, description="how long a speaker stays after going quiet")
    speaker_switch_margin_db: int = Field(6, ge=0, description="how much louder a newcomer must be")
    sfu_last_n: int = Field(3, ge=1, le=16, description="SFU: loudest senders forwarded to each subscriber")
    sfu_preroll_ms: int = Field(100, ge=0, le=400,
                                description="SFU: a newly chosen speaker's last packets sent from the cache "
                                            "so the switch does not clip their first syllable")
    sfu_max_packet_age_ms: float = Field(
        100.0, ge=20.0, description="SFU: packets older than this when read (they waited in the socket "
                                    "while the engine stalled) are dropped, not forwarded in a burst")
    sfu_packet_cache: int = Field(128, ge=16, le=1024,
                                  description="SFU: recent packets kept per sender to answer NACKs")
    # Encoders of the mixes (docs/quality.md: chosen from PESQ against CPU per encode)
    opus_bitrate: int = Field(64000, ge=6000, le=510000)
    opus_complexity: int = Field(5, ge=0, le=10)
    opus_fec: bool = Field(True, description="in-band FEC for receivers whose RTCP reports loss")
    opus_packet_loss_percent: int | None = Field(
        None, ge=0, le=100, description="a fixed loss hint for every encoder; unset: each listener "
                                        "group's hint follows its receiver reports")
    opus_dtx: bool = False
    mcu_talker_linger_ms: int = Field(
        1000, ge=0, le=10000, description="a talker who stops keeps its own encoder (encoding the total) "
                                      "this long before moving to the shared stream")
    mcu_seamless_switch: bool = Field(
        True, description="a listener who starts talking gets an own encoder that continues the shared "
                          "encoder's state (no jump in what its decoder hears)")
    # Jitter buffer
    jitter_min_ms: float = Field(20.0, ge=0)
    jitter_max_ms: float = Field(200.0, ge=20)
    jitter_capacity: int = Field(128, ge=8, le=4096)
    jitter_time_stretch: bool = Field(
        True, description="change playout delay by time-scale modification (accelerate in pauses, "
                          "PLC while re-buffering) instead of dropping frames and playing silence")
    # Protection
    max_packet_rate: int = Field(200, ge=10, description="packets/s per leg before dropping (flood)")
    max_legs_per_conference: int = Field(1000, ge=2)
    max_conferences: int = Field(1000, ge=1)
    srtp_required: bool = False
    latch_remote: bool = Field(
        False, description="send to where authenticated media comes from (symmetric RTP, RFC 4961)")
    rtcp_interval_s: float = Field(5.0, gt=0, description="RFC 3550 6.2 minimum report interval")
    # Engine-side media services (mixer/media): files the engine reads and writes
    data_dir: Path = Field(Path.home() / ".local" / "share" / "voicemix",
                           description="where recordings go unless recordings_dir says otherwise")
    recordings_dir: Path | None = Field(None, description="recordings; unset = <data_dir>/recordings")
    player_dirs: list[Path] = Field(
        default_factory=list, description="directories players may read files from; empty = the "
                                          "recordings directory and <data_dir>/media")
    player_max_seconds: float = Field(3600.0, gt=0, description="a tone plays at most this long")
    max_players_per_conference: int = Field(16, ge=1, le=256,
                                            description="players playing at once in one conference")
    recording_opus_bitrate: int = Field(32000, ge=6000, le=510000,
                                        description="Ogg recordings: the mix's Opus bitrate")
    max_recordings_per_conference: int = Field(4, ge=1, le=64)
    # Media forks: the same protection as TURN relays (mixer/turn/peers.py)
    fork_allow_loopback: bool = Field(
        False, description="forks may send to loopback addresses (tests turn it on)")
    fork_allowed_ips: list[str] = Field(
        default_factory=list, description="CIDRs forks may send to although private or "
                                          "otherwise refused (e.g. an analytics host on the LAN)")
    max_forks_per_conference: int = Field(8, ge=1, le=256)

    @field_validator("media_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535):
            raise ValueError("media_ports must look like 40000-49999 (1024..65535)")
        return value

    @property
    def recordings_path(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def player_paths(self) -> list[Path]:
        return list(self.player_dirs) or [self.recordings_path, self.data_dir / "media"]

    @property
    def port_range(self) -> tuple[int, int]:
        low, _, high = self.media_ports.partition("-")
        return int(low), int(high)
