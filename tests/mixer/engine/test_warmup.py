"""The engine warms its media paths (codecs, mix, SRTP, RTP parse) before its clock starts."""
from __future__ import annotations

import asyncio

import uvloop

from mixer.engine.engine import Engine
from mixer.engine.warmup import warm_media_paths
from mixer.settings import EngineSettings


def test_warming_runs_every_media_path_once_and_says_how_long_it_took() -> None:
    assert warm_media_paths() > 0.0


def test_the_engine_warms_before_its_first_tick() -> None:
    async def run():
        engine = Engine(EngineSettings(media_ports="41000-41099"))
        assert engine.warmup_ms == 0.0
        engine.start()
        try:
            warmed, ticks_at_start = engine.warmup_ms, engine.clock.ticks
            await asyncio.sleep(0.1)
            return warmed, ticks_at_start, engine.clock.ticks
        finally:
            engine.stop()

    warmed, ticks_at_start, ticks_later = uvloop.run(run())
    assert warmed > 0.0 and ticks_at_start == 0 and ticks_later > 0
