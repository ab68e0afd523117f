"""One EngineClient contract, two implementations: the in-process Engine and a remote engine over
its real HTTP control API (aiohttp on a loopback port)."""
import contextlib

import pytest
import uvloop

from mixer.engine.client import HttpEngine, InProcessEngine
from controller.testing import free_port
from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine, EngineError
from mixer.sim.participant import SimulatedParticipant
from controller.testing import continuous_tone

pytestmark = pytest.mark.store_independent  # no store involved


def run(coro):
    return uvloop.run(coro)


@contextlib.asynccontextmanager
async def engine_client(kind: str):
    engine = Engine()
    engine.start()
    runner = None
    try:
        if kind == "in_process":
            client = InProcessEngine(engine)
        else:
            runner, port = await start_control_api(engine)
            client = HttpEngine(f"http://127.0.0.1:{port}")
        yield client
        await client.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        engine.stop()


@pytest.mark.parametrize("kind", ["in_process", "http"])
def test_engine_client_contract(kind):
    async def scenario():
        async with engine_client(kind) as client:
            assert (await client.create_conference("mcu", "room1")) == {"id": "room1", "mode": "mcu"}
            with pytest.raises(EngineError) as exc:
                await client.create_conference("mcu", "room1")
            assert (exc.value.status, exc.value.code) == (409, "conference_exists")
            with pytest.raises(EngineError) as exc:
                await client.create_conference("carrier-pigeon")
            assert (exc.value.status, exc.value.code) == (400, "unsupported_mode")
            with pytest.raises(EngineError) as exc:
                await client.get_conference("nope")
            assert (exc.value.status, exc.value.code) == (404, "no_such_conference")
            with pytest.raises(EngineError) as exc:
                await client.add_leg("room1", "this is not SDP")
            assert (exc.value.status, exc.value.code) == (400, "bad_sdp")

            participant = SimulatedParticipant("p", 520.0, continuous_tone(520.0, 1))
            answer = await client.add_leg("room1", await participant.offer(), "p")
            assert answer["sdp"].startswith("v=0") and answer["id"]
            participant.accept(answer["sdp"])
            leg = await client.update_leg("room1", answer["id"], muted=True)
            assert leg["muted"] is True and leg["label"] == "p"
            conference = await client.get_conference("room1")
            assert [x["id"] for x in conference["legs"]] == [answer["id"]]
            assert (await client.stats())["legs"] == 1
            await client.remove_leg("room1", answer["id"])
            with pytest.raises(EngineError) as exc:
                await client.remove_leg("room1", answer["id"])
            assert exc.value.code == "no_such_leg"
            await client.delete_conference("room1")
            assert (await client.stats())["conferences"] == 0
            participant.close()
    run(scenario())


def test_unreachable_remote_engine_is_503():
    async def scenario():
        client = HttpEngine(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(EngineError) as exc:
            await client.stats()
        assert (exc.value.status, exc.value.code) == (503, "engine_unavailable")
        await client.close()
    run(scenario())
