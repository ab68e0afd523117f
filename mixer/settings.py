"""Engine settings in one typed place; every field can come from a `VOICEMIX_<NAME>` variable.

Defaults run embedded on loopback with no configuration at all.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """Media engine settings (VOICEMIX_MEDIA_IP, VOICEMIX_MEDIA_PORTS, ...)."""

    # a setting refused at start never echoes its value (it may be a secret)
    model_config = SettingsConfigDict(env_prefix="VOICEMIX_", extra="ignore",
                                      hide_input_in_errors=True)

    media_ip: str = Field(
        "127.0.0.1", description="address of the media UDP sockets (and the one named in SDP answers)")
    media_ports: str = Field(
        "40000-49999", description="UDP port range for legs (one even/odd pair per leg), LOW-HIGH")
    media_public_ip: str | None = Field(
        None, description="address(es) advertised in answers instead of media_ip (comma-separated; "
                          "the engine behind NAT: its public address); WebRTC legs list a host "
                          "candidate for each")
    control_listen: str = Field(
        "127.0.0.1:8790", description="HOST:PORT of the HTTP/JSON control API (keep it on loopback or a private network)")
    # Control API security (mixer/engine/control_auth.py)
    control_secret: str | None = Field(
        None, repr=False,
        description="bearer secret every control request must carry (the controller's "
                    "VOICEMIX_CONTROL_SECRET, 16 characters or more); required when the control "
                    "address is not loopback, where the API is then served over HTTPS. Unset on "
                    "loopback: no authentication (the embedded default)")
    control_tls: bool = Field(
        False, description="serve the control API over HTTPS on loopback too (always on for any "
                           "other address)")
    control_tls_cert: Path | None = Field(
        None, description="PEM certificate of the control API; unset = self-signed, made on "
                          "first start as <data_dir>/engine-control-cert.pem")
    control_tls_key: Path | None = Field(None, description="PEM private key of control_tls_cert")
    auth_failure_limit: int = Field(
        10, ge=1, description="failed authentications from one address within "
                              "auth_failure_window_s before it is refused (429) for auth_cooldown_s")
    auth_failure_window_s: float = Field(60.0, gt=0, description="window of auth_failure_limit")
    auth_cooldown_s: float = Field(
        60.0, gt=0, description="how long an address that failed too often is refused, unread")
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
    opus_bitrate: int = Field(32000, ge=6000, le=510000, description="Opus encoder bitrate, bits/s")
    opus_complexity: int = Field(
        5, ge=0, le=10, description="Opus encoder complexity (0 cheapest .. 10 best)")
    opus_fec: bool = Field(True, description="Opus in-band forward error correction in what the engine sends")
    opus_packet_loss_percent: int = Field(
        10, ge=0, le=100, description="expected loss the Opus encoder plans its FEC for")
    opus_dtx: bool = Field(False, description="Opus discontinuous transmission (fewer packets in silence)")
    # Jitter buffer
    jitter_min_ms: float = Field(20.0, ge=0, description="jitter buffer: least playout delay")
    jitter_max_ms: float = Field(
        200.0, ge=20, description="jitter buffer: most playout delay; also how long a quiet stream is waited for")
    jitter_capacity: int = Field(128, ge=8, le=4096, description="jitter buffer: packets held per leg")
    # Protection
    max_packet_rate: int = Field(200, ge=10, description="packets/s per leg before dropping (flood)")
    max_legs_per_conference: int = Field(
        1000, ge=2, description="more legs in one conference answer 409 conference_full")
    max_conferences: int = Field(1000, ge=1, description="more conferences answer 503 too_many_conferences")
    srtp_required: bool = Field(False, description="refuse plain RTP offers (488 srtp_required)")
    unconfirmed_send_s: float = Field(
        0.0, ge=0, le=5, description="how long a plain RTP/SDES leg may send to the address its "
                                     "offer names before media has come from that host (0: "
                                     "nothing until then; see docs/security.md, reflection)")
    rtcp_interval_s: float = Field(5.0, gt=0, description="RFC 3550 6.2 minimum report interval")
    # WebRTC legs (ICE-lite, DTLS-SRTP)
    webrtc_srtp_profiles: str = Field(
        "SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM",
        description="DTLS-SRTP protection profiles in the engine's order of preference (RFC 5764 "
                    "4.1.2, RFC 7714); the first one the browser offers is used")
    ice_consent_timeout_s: float = Field(
        30.0, gt=0, description="RFC 7675: stop sending this long after the last valid ICE check")
    webrtc_connect_timeout_s: float = Field(
        30.0, gt=0, description="a WebRTC leg not keyed and nominated this long after its answer fails")
    dtls_mtu: int = Field(1200, ge=576, le=1400, description="largest DTLS datagram sent")
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
    max_recordings_per_conference: int = Field(4, ge=1, le=64,
                                               description="recordings running at once in one conference")
    # Media forks: the same protection as TURN relays (mixer/turn/peers.py)
    fork_allow_loopback: bool = Field(
        False, description="forks may send to loopback addresses (tests turn it on)")
    fork_allowed_ips: list[str] = Field(
        default_factory=list, description="CIDRs forks may send to although private or "
                                          "otherwise refused (e.g. an analytics host on the LAN)")
    max_forks_per_conference: int = Field(8, ge=1, le=256,
                                          description="media forks at once in one conference")
    # Operations
    drain_timeout_s: float = Field(
        300.0, ge=0, description="graceful drain (SIGTERM or POST /drain): how long current "
                                 "conferences may go on before the engine ends them")

    @field_validator("control_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("media_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535):
            raise ValueError("media_ports must look like 40000-49999 (1024..65535)")
        return value

    @field_validator("media_public_ip")
    @classmethod
    def _public_ips(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for address in value.split(","):
            ipaddress.ip_address(address.strip())  # ValueError: candidates are IP literals
        return value

    @property
    def advertised_addresses(self) -> list[str]:
        """What answers name as the engine's media address(es): media_public_ip, else media_ip."""
        if self.media_public_ip:
            return [a.strip() for a in self.media_public_ip.split(",") if a.strip()]
        return [self.media_ip]

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
