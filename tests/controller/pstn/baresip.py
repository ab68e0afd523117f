"""baresip (Debian's baresip-core) as a real softphone for the tests: headless, its microphone a
sine (`ausine`) or a WAV file (`aufile`), and what it hears and sends dumped to WAV files by the
`sndfile` module, so what reached it is measured by spectrum."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import wave
from pathlib import Path

import numpy as np

from controller.testing import free_port

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


class Baresip:
    def __init__(self, workdir: Path, *, tone_hz: int | None = 440, wav: Path | None = None,
                 codecs: str = "PCMU", answer: bool = False, user: str = "bob") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dumps = self.dir / "dumps"
        self.dumps.mkdir(exist_ok=True)
        self.sip_port = free_port()
        rtp = free_port() // 2 * 2
        source = f"aufile,{wav}" if wav is not None else f"ausine,{tone_hz}"
        (self.dir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            f"audio_source {source}",
            "audio_player none,none",
            "audio_alert none,none",
            "ausrc_srate 48000" if wav is None else "ausrc_srate 8000",
            "ausrc_channels 2" if wav is None else "ausrc_channels 1",
            "auplay_srate 48000", "auplay_channels 2",
            f"module_path {MODULES}",
            *[f"module {m}.so" for m in ("g711", "opus", "ausine", "aufile", "sndfile", "account", "menu")],
            f"snd_path {self.dumps}",
            f"rtp_ports {rtp}-{rtp + 10}",
            "audio_buffer 20-160",
            "dtmf_mode rtpevent", ""]))
        mode = ";answermode=auto" if answer else ""
        (self.dir / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{self.sip_port}>;regint=0{mode};audio_codecs={codecs}\n")
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *commands: str, seconds: int) -> None:
        args = [BARESIP, "-f", str(self.dir), "-t", str(seconds)]
        for command in commands:
            args += ["-e", command]
        self.log = self.dir / "baresip.log"   # its console: read it when a test fails
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)

    async def wait(self, timeout: float = 30.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5)
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()

    def heard(self) -> tuple[np.ndarray, int]:
        """What it decoded (its `dec` dump): samples and rate."""
        files = sorted(self.dumps.glob("*-dec.wav"))
        if not files:
            return np.zeros(0, dtype=np.int16), 8000
        with wave.open(str(files[-1])) as reader:
            data = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
            if reader.getnchannels() == 2:
                data = data[::2]
            return data, reader.getframerate()


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return path
