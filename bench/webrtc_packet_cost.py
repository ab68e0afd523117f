"""Per-packet cost of a WebRTC leg against an SDES leg: receive, send, and SFU fan-out.

Both legs run AES_CM_128_HMAC_SHA1_80 (the WebRTC leg's keys come from a real DTLS handshake, the
SDES leg's from its SDP), on real sockets, through the same `MediaLeg` paths; the WebRTC leg only
adds its RFC 7983 first-byte demux in front. Each contender handles the same kind of packet (a
20 ms Opus payload of 100 bytes with an RFC 6464 level) in batches of 2000, round-robin over 21
rounds with the garbage collector off; the median ns/packet of each and the ratio are printed.

    python bench/webrtc_packet_cost.py [--rounds 21] [--batch 2000]

Target (issue 11): equal (ratio ~1.0): the same SRTP path.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mixer import _rtp  # noqa: E402
from mixer._forward import StreamRewriter, fan_out  # noqa: E402
from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport  # noqa: E402
from mixer.legs.leg import MediaLeg  # noqa: E402
from mixer.legs.ports import bind_udp  # noqa: E402
from mixer.legs.transport import SendFlusher  # noqa: E402
from mixer.legs.webrtc import WebRtcLeg  # noqa: E402
from mixer.rtp.srtp import SrtpContext  # noqa: E402
from mixer.sdp import answer_audio, offer_audio  # noqa: E402
from mixer.sdp.webrtc import DtlsFingerprint, IceParameters, answer_webrtc  # noqa: E402
from mixer.settings import EngineSettings  # noqa: E402
from mixer.sim.webrtc_client import ScriptedWebRtcClient  # noqa: E402

SUITE = "AES_CM_128_HMAC_SHA1_80"
PAYLOAD = bytes(range(100))
# Where both legs send: a socket nobody reads (the kernel queues, then drops, at the same cost
# for both; a closed port would make every send cost an ICMP error instead).
_SINK = bind_udp("127.0.0.1", 0)
PEER = _SINK.getsockname()[:2]


def _sdes_leg(settings: EngineSettings, flusher: SendFlusher) -> tuple[MediaLeg, SrtpContext]:
    sock = bind_udp("127.0.0.1", 0)
    offer, crypto = offer_audio(local_ip=PEER[0], local_port=PEER[1], codecs=("opus",), srtp=True)
    answer = answer_audio(offer, local_ip="127.0.0.1", local_port=sock.getsockname()[1])
    leg = MediaLeg("sdes", answer, sock, None, settings, flusher=flusher, retransmits=True)
    peer = SrtpContext(SUITE, crypto.key, answer.local_crypto.key)
    return leg, peer


def _webrtc_leg(settings: EngineSettings, flusher: SendFlusher) -> tuple[WebRtcLeg, SrtpContext]:
    """A WebRTC leg keyed by a real DTLS handshake (in memory) and nominated by a real check."""
    engine_cert = DtlsCertificate.generate()
    client = ScriptedWebRtcClient()
    sock = bind_udp("127.0.0.1", 0)
    local = IceParameters("BeNc", "benchpasswordbenchpass")
    answer = answer_webrtc(client.offer(), addresses=["127.0.0.1"], local_port=sock.getsockname()[1],
                           local_ice=local, local_fingerprint=DtlsFingerprint("sha-256", engine_cert.fingerprint))
    leg = WebRtcLeg("webrtc", answer, sock, settings, engine_cert, ("SRTP_AES128_CM_SHA1_80",),
                    flusher=flusher, retransmits=True)
    client.accept(answer.sdp.replace(f"{sock.getsockname()[1]} typ host", "9 typ host"))
    _txid, check = client.check_request()
    leg._on_datagram(check, PEER, False)
    queue: list[bytes] = []
    dtls_client = DtlsSrtpTransport(client.certificate, server=False, send=queue.append,
                                    remote_fingerprints=[("sha-256", engine_cert.fingerprint)])
    leg.dtls.send = lambda data: dtls_client.receive(data)
    dtls_client.start()
    while queue:
        leg._on_datagram(queue.pop(0), PEER, False)
    assert leg.srtp is not None and dtls_client.state == "connected"
    keys = dtls_client.keys
    return leg, SrtpContext(keys.suite, keys.local_key, keys.remote_key)


def _packets(peer: SrtpContext, count: int) -> list[bytes]:
    ssrc, seq, ts = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
    ext = _rtp.audio_level_extension(1, 30, True)
    out = []
    for i in range(count):
        packet = _rtp.build_rtp(111, (seq + i) & 0xFFFF, (ts + 960 * i) & 0xFFFFFFFF, ssrc, PAYLOAD,
                                False, _rtp.EXTENSION_PROFILE_ONE_BYTE, ext)
        out.append(peer.protect(packet))
    return out


async def run(rounds: int, batch: int) -> dict:
    settings = EngineSettings(max_packet_rate=10**9)
    flusher = SendFlusher(automatic=False)
    sdes, sdes_peer = _sdes_leg(settings, flusher)
    webrtc, webrtc_peer = _webrtc_leg(settings, flusher)
    for leg in (sdes, webrtc):
        await leg.open()
    webrtc._update_sending(time.monotonic())
    assert webrtc.send_enabled and sdes.send_enabled
    incoming = {"sdes": _packets(sdes_peer, rounds * batch), "webrtc": _packets(webrtc_peer, rounds * batch)}
    legs = {"sdes": sdes, "webrtc": webrtc}
    slots = {name: leg.slot_sender(StreamRewriter(secrets.randbits(32), 0, 0)) for name, leg in legs.items()}
    samples: dict[str, list[float]] = {f"{what} {name}": [] for what in ("receive", "send", "fan-out")
                                       for name in legs}
    gc.disable()
    try:
        tick = 0.0
        for r in range(rounds):
            order = list(legs.items()) if r % 2 == 0 else list(legs.items())[::-1]
            for name, leg in order:
                packets = incoming[name][r * batch:(r + 1) * batch]
                addr = PEER if name == "sdes" else webrtc.ice.selected
                began = time.perf_counter()
                for data in packets:
                    leg._on_datagram(data, addr, False, 0.0)
                samples[f"receive {name}"].append((time.perf_counter() - began) / batch)
                began = time.perf_counter()
                for i in range(batch):
                    leg.send_payload(PAYLOAD, tick + 20.0 * i, 0.0)
                    if i % 64 == 63:
                        flusher.flush()
                flusher.flush()
                samples[f"send {name}"].append((time.perf_counter() - began) / batch)
                began = time.perf_counter()
                targets = [slots[name]]
                for i in range(batch):
                    fan_out(targets, 1, i & 0xFFFF, 960 * i, False, PAYLOAD, tick + 20.0 * i, 0.0, 30, True)
                    if i % 64 == 63:
                        flusher.flush()
                flusher.flush()
                samples[f"fan-out {name}"].append((time.perf_counter() - began) / batch)
            tick += 20.0 * batch
    finally:
        gc.enable()
    drops = {name: {k: v for k, v in leg.drops.items() if v} for name, leg in legs.items()}
    for leg in legs.values():
        leg.close(send_bye=False)
    return {"ns": {k: float(np.median(v)) * 1e9 for k, v in samples.items()}, "drops": drops,
            "received": {name: leg.packets_in for name, leg in legs.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds, args.batch))
    ns = result["ns"]
    print(f"per packet, median of {args.rounds} rounds of {args.batch} ({SUITE} on both):")
    print(f"{'path':<10}{'SDES ns':>10}{'WebRTC ns':>12}{'WebRTC/SDES':>13}")
    for what in ("receive", "send", "fan-out"):
        sdes, webrtc = ns[f"{what} sdes"], ns[f"{what} webrtc"]
        print(f"{what:<10}{sdes:>10.0f}{webrtc:>12.0f}{webrtc / sdes:>13.3f}")
    print(f"packets received: {result['received']}; drops: {result['drops']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
