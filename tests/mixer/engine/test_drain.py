"""Drain through the engine's control API, in-process: refusals, the deadline, what stats say."""
import asyncio

import uvloop
from aiohttp import ClientSession

from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.sdp import offer_audio

OFFER, _ = offer_audio(local_ip="127.0.0.1", local_port=30000, codecs=("opus",))


def test_drain_refuses_new_conferences_keeps_current_ones_and_ends_them_at_the_deadline():
    async def scenario():
        engine = Engine()
        engine.start()
        runner, port = await start_control_api(engine)
        try:
            async with ClientSession(f"http://127.0.0.1:{port}") as http:
                assert (await http.post("/conferences", json={"id": "a"})).status == 201
                assert (await http.post("/conferences", json={"id": "b", "mode": "sfu"})).status == 201
                listed = (await (await http.get("/conferences")).json())["conferences"]
                assert [(c["id"], c["mode"], c["legs"]) for c in listed] == [("a", "mcu", 0), ("b", "sfu", 0)]
                for bad in ({"timeout_s": "soon"}, {"timeout_s": -1}, {"timeout_s": True}):
                    response = await http.post("/drain", json=bad)
                    assert response.status == 422, bad
                    assert (await response.json())["error"]["code"] == "bad_field"
                assert (await (await http.get("/stats")).json())["draining"] is False

                response = await http.post("/drain", json={"timeout_s": 0.6})
                assert response.status == 202
                status = await response.json()
                assert status["draining"] is True and status["conferences"] == 2
                assert 0.4 < status["ends_in_s"] <= 0.6
                # a later drain with a longer timeout does not push the deadline back
                later = await (await http.post("/drain", json={"timeout_s": 60})).json()
                assert later["ends_in_s"] <= 0.6
                refused = await http.post("/conferences", json={"id": "c"})
                assert refused.status == 503
                assert (await refused.json())["error"]["code"] == "draining"
                # a current conference still takes legs, and says when it will end
                assert (await http.post("/conferences/a/legs", json={"sdp": OFFER})).status == 201
                conference = await (await http.get("/conferences/a")).json()
                assert conference["drain"]["draining"] is True
                assert (await (await http.get("/stats")).json())["draining"] is True
                # b ends by itself (its owner hangs up): a stays until the deadline
                assert (await http.delete("/conferences/b")).status == 204
                await asyncio.wait_for(engine.drained(), 2.0)
                assert engine.conferences == {}
                gone = await http.get("/conferences/a")
                assert gone.status == 404
                assert (await gone.json())["error"]["code"] == "conference_drained"
                never = await http.get("/conferences/zz")
                assert (await never.json())["error"]["code"] == "no_such_conference"
                assert engine.ports.in_use == 0
        finally:
            engine.stop()
            await runner.cleanup()

    uvloop.run(scenario())


def test_an_idle_engine_is_drained_at_once():
    async def scenario():
        engine = Engine()
        engine.start()
        try:
            status = engine.drain()
            assert status["draining"] is True and status["conferences"] == 0
            await asyncio.wait_for(engine.drained(), 0.5)
        finally:
            engine.stop()

    uvloop.run(scenario())
