"""CPU per listener: voicemix's MCU and Janus AudioBridge side by side, same call, same clients.

    python bench/bridge_cpu.py              # 10 and 60 listeners, 12 s each, both servers (~2 min)

One talker sends speech (Opus 32 kb/s) to a conference of N listeners; each server runs in its own
process, and its CPU time (user + system, /proc) over the talk is read. The cost per listener is
the slope between two sizes, (cpu(N2) - cpu(N1)) / (N2 - N1), in percent of one core: what one
more listener costs, without the fixed cost of the talker's decode and the servers' idle loops.
Listeners do not send (a listen-only leg; both servers mix whoever talks). Other sessions load
this machine too: run it twice, and compare the two servers within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np
import uvloop

from speech_quality import TALKER, JanusServer, VoicemixServer, participant
from mixer.settings import EngineSettings
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
        for i in range(listeners):
            listener = participant(f"l{i}", np.zeros(0, dtype=np.int16), "opus")
            people.append(listener)
            await server.join(room, listener, *_clean(), 0, [])
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
