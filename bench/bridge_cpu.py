"""CPU per listener: voicemix's MCU and Janus AudioBridge side by side, same call, same clients.

    python bench/bridge_cpu.py              # 10 and 60 listeners, 12 s each, both servers (~2 min)

One talker sends speech (Opus 32 kb/s) to a conference of N listeners; each server runs in its own
process, and its CPU time (user + system, /proc) over the talk is read. The cost per listener is
the slope between two sizes, (cpu(N2) - cpu(N1)) / (N2 - N1), in percent of one core: what one
more listener costs, without the fixed cost of the talker's decode and the servers' idle loops.
Listeners send silence (Janus sends nothing to a plain-RTP participant it has not heard from);
the MCU judges them by their RFC 6464 level and does not decode them; Janus decodes every
participant it mixes. Other sessions load
this machine too: run it twice, and compare the two servers within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np
import uvloop

from speech_quality import TALKER, JanusServer, VoicemixServer, _Replay, encode_all, participant
from mixer.settings import EngineSettings
from mixer.sim.participant import SimulatedParticipant
from mixer.sim.speech import speech

TALK_S = 12.0


async def measure(kind: str, listeners: int, settings: EngineSettings) -> float:
    """CPU seconds the server spent while the talker talked for TALK_S."""
    server = JanusServer() if kind == "janus" else VoicemixServer(settings)
    await server.start()
    people = []
    try:
        room = await server.create("mcu")
        pcm = speech("flite")[: int(TALK_S * 48000)]
        talker = participant("talker", pcm, "opus", TALKER)
        people.append(talker)
        await server.join(room, talker, *_clean(), 0, [])
        silence = encode_all(np.zeros(48000, dtype=np.int16), "opus")
        for i in range(listeners):
            # listeners send silence (Janus sends a plain-RTP participant nothing before it has
            # heard from it; the MCU judges them by their level and never decodes them)
            listener = SimulatedParticipant(f"l{i}", 0.0, np.zeros(int((TALK_S + 2) * 48000), dtype=np.int16))
            listener.encoder = _Replay(silence * int(TALK_S + 3))
            people.append(listener)
            await server.join(room, listener, *_clean(), 0, [])
        for listener in people[1:]:
            listener.start()
        await asyncio.sleep(1.0)
        before = server.cpu_s()
        talker.start()
        await asyncio.sleep(TALK_S)
        spent = server.cpu_s() - before
        received = [len(p.received.packets) for p in people[1:]]
        if min(received, default=1) < TALK_S * 40:
            print(f"  {kind}: a listener received only {min(received)} packets", file=sys.stderr)
        return spent
    finally:
        for person in people:
            person.close()
        await server.stop()


def _clean():
    from mixer.sim.impair import Impairment
    return Impairment(), Impairment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(10, 60))
    args = parser.parse_args()
    settings = EngineSettings()
    small, large = args.sizes
    print("| server | CPU at %d listeners | at %d | per extra listener (%% of a core) |" % (small, large))
    print("|---|---|---|---|")
    for kind in ("voicemix", "janus"):
        a = uvloop.run(measure(kind, small, settings))
        b = uvloop.run(measure(kind, large, settings))
        per = (b - a) / (large - small) / TALK_S * 100
        print(f"| {kind} | {a / TALK_S * 100:.1f} % | {b / TALK_S * 100:.1f} % | {per:.3f} % |", flush=True)


if __name__ == "__main__":
    main()
