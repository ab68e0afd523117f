"""Test peers for the PSTN side: `Phone`, a G.711 phone's RTP side on a real UDP socket, and
`Carrier`, a SIP user agent on loopback (this stack's UA, playing the carrier) with a Phone for
each call it makes or takes."""
from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from controller.sip import SipApplication, UaConfig, UserAgent
from controller.sip.transaction import SipTimers
from mixer import _g711, _rtp
from mixer.sdp import parse

FAST = SipTimers(t1=0.05, t2=0.2, t4=0.25)


class Phone(asyncio.DatagramProtocol):
    """A G.711 phone's RTP side: plays 8 kHz samples in `ptime` packets, keeps what comes."""

    def __init__(self, codec: str = "PCMU", ptime: int = 20) -> None:
        self.codec, self.ptime = codec, ptime
        self.packets: list[_rtp.RtpPacket] = []
        self.transport = None
        self.port = 0
        self.remote = None
        self._task: asyncio.Task | None = None

    @classmethod
    async def open(cls, **kw) -> Phone:
        phone = cls(**kw)
        loop = asyncio.get_running_loop()
        phone.transport, _ = await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        phone.port = phone.transport.get_extra_info("sockname")[1]
        return phone

    def datagram_received(self, data, addr):
        if len(data) >= 12 and not (200 <= data[1] <= 206):
            with contextlib.suppress(_rtp.RtpError):
                self.packets.append(_rtp.RtpPacket.parse(data))

    def sdp(self, direction: str = "sendrecv", telephone_event: bool = True, version: int = 1) -> bytes:
        pt = 0 if self.codec == "PCMU" else 8
        formats = f"{pt} 101" if telephone_event else f"{pt}"
        te = "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n" if telephone_event else ""
        return (f"v=0\r\no=phone 7 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.port} RTP/AVP {formats}\r\na=rtpmap:{pt} {self.codec}/8000\r\n{te}"
                f"a=ptime:{self.ptime}\r\na={direction}\r\n").encode()

    def answer_to(self, offer: bytes, direction: str = "sendrecv") -> bytes:
        """Answer an engine offer with this phone's codec; remember where to send."""
        self.remote = engine_address(offer)
        return self.sdp(direction)

    def play(self, samples8k: np.ndarray) -> None:
        self._task = asyncio.get_running_loop().create_task(self._play(samples8k))

    async def _play(self, samples8k: np.ndarray) -> None:
        encode = _g711.ulaw_encode if self.codec == "PCMU" else _g711.alaw_encode
        pt = 0 if self.codec == "PCMU" else 8
        n = 8 * self.ptime
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(len(samples8k) // n):
            await asyncio.sleep(max(0.0, start + k * self.ptime / 1000 - loop.time()))
            payload = encode(np.ascontiguousarray(samples8k[k * n:(k + 1) * n]))
            if self.remote is not None:
                self.transport.sendto(_rtp.build_rtp(pt, k & 0xFFFF, k * n, 0xABCD, payload), self.remote)

    async def played(self) -> None:
        if self._task is not None:
            await self._task

    def audio(self) -> np.ndarray:
        pt = 0 if self.codec == "PCMU" else 8
        decode = _g711.ulaw_decode_into if self.codec == "PCMU" else _g711.alaw_decode_into
        chunks = []
        for packet in sorted((p for p in self.packets if p.payload_type == pt), key=lambda p: p.timestamp):
            out = np.zeros(len(packet.payload), dtype=np.int16)
            decode(packet.payload, out)
            chunks.append(out)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self):
        if self._task is not None:
            self._task.cancel()
        self.transport.close()


def engine_address(sdp: bytes | str) -> tuple[str, int]:
    description = parse(sdp.decode() if isinstance(sdp, bytes) else sdp)
    media = next(m for m in description.media if m.media == "audio")
    return description.connection_of(media).address, media.port


def tone8k(freq: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    n = np.arange(int(8000 * seconds))
    return (np.sin(2 * np.pi * freq * n / 8000) * amplitude).astype(np.int16)


class Carrier(SipApplication):
    """The carrier's side, on loopback: places calls to the controller and answers the ones the
    controller places (`answer` decides: a callable(session, phone) -> None)."""

    def __init__(self) -> None:
        self.ua: UserAgent | None = None
        self.incoming: list = []
        self.phones: list[Phone] = []
        self.answer = None

    async def start(self) -> Carrier:
        self.ua = UserAgent(UaConfig(port=0, timers=FAST, contact_user="carrier"), self)
        await self.ua.start()
        return self

    @property
    def port(self) -> int:
        return self.ua.port

    def on_invite(self, session) -> None:
        self.incoming.append(session)
        if self.answer is not None:
            self.answer(session)

    async def phone(self, **kw) -> Phone:
        phone = await Phone.open(**kw)
        self.phones.append(phone)
        return phone

    async def call(self, sip_port: int, number: str, caller: str = "+15550100199",
                   phone: Phone | None = None, extra=None, transport: str = "udp"):
        phone = phone or await self.phone()
        session = self.ua.invite(f"sip:{number}@127.0.0.1:{sip_port};transport={transport}",
                                 from_=f"<sip:{caller}@carrier.test>", sdp=phone.sdp(), extra=extra)
        return session, phone

    async def stop(self) -> None:
        for phone in self.phones:
            phone.close()
        await self.ua.stop()
