"""SDP for audio legs: RFC 4566 descriptions, RFC 4568 SDES keys, RFC 3264 offer/answer."""

from mixer.sdp.crypto import (
    SRTP_SUITE_KEY_SALT_LENGTHS,
    SUPPORTED_SUITES,
    CryptoAttribute,
    format_crypto,
    generate_crypto,
    parse_crypto,
)
from mixer.sdp.offer_answer import (
    AUDIO_LEVEL_URI,
    DEFAULT_CODECS,
    SUPPORTED_CODECS,
    AudioAnswer,
    SdpNotAcceptable,
    answer_audio,
    offer_audio,
)
from mixer.sdp.session import (
    DIRECTIONS,
    AttributeList,
    Connection,
    Extmap,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SdpError,
    SessionDescription,
    Timing,
    parse,
)

__all__ = [
    "AUDIO_LEVEL_URI",
    "DEFAULT_CODECS",
    "DIRECTIONS",
    "SRTP_SUITE_KEY_SALT_LENGTHS",
    "SUPPORTED_CODECS",
    "SUPPORTED_SUITES",
    "AttributeList",
    "AudioAnswer",
    "Connection",
    "CryptoAttribute",
    "Extmap",
    "MediaDescription",
    "Origin",
    "RtcpAttribute",
    "SdpError",
    "SdpNotAcceptable",
    "SessionDescription",
    "Timing",
    "answer_audio",
    "format_crypto",
    "generate_crypto",
    "offer_audio",
    "parse",
    "parse_crypto",
]
