"""The engine's HTTP control API on loopback: every operation and every error answer."""
import uvloop
from aiohttp import ClientSession

from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.sdp import offer_audio, parse

OFFER, _ = offer_audio(local_ip="127.0.0.1", local_port=30000, codecs=("opus",))
G722_ONLY = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             "m=audio 30002 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")


async def with_engine(scenario):
    engine = Engine()
    engine.start()
    runner, port = await start_control_api(engine)
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as http:
            return await scenario(http)
    finally:
        engine.stop()
        await runner.cleanup()


async def expect(response, status: int, code: str | None = None) -> dict | None:
    assert response.status == status, await response.text()
    if status == 204:
        return None
    body = await response.json()
    if code is not None:
        assert body == {"error": {"code": code, "message": body["error"]["message"]}}
        assert body["error"]["message"]
    return body


def test_conference_and_leg_lifecycle():
    async def scenario(http):
        created = await expect(await http.post("/conferences", json={"mode": "mcu", "id": "room-1"}), 201)
        assert created == {"id": "room-1", "mode": "mcu"}
        leg = await expect(await http.post("/conferences/room-1/legs",
                                           json={"sdp": OFFER, "label": "alice"}), 201)
        answer = parse(leg["sdp"])
        audio = answer.media[0]
        assert audio.port >= 40000 and audio.formats == [111, 110]  # opus + telephone-event
        conference = await expect(await http.get("/conferences/room-1"), 200)
        assert conference["mode"] == "mcu"
        assert [l["id"] for l in conference["legs"]] == [leg["id"]]
        assert conference["legs"][0]["label"] == "alice"
        assert conference["legs"][0]["local_port"] == audio.port
        muted = await expect(await http.patch(f"/conferences/room-1/legs/{leg['id']}",
                                              json={"muted": True}), 200)
        assert muted["muted"] is True
        stats = await expect(await http.get("/stats"), 200)
        assert stats["legs"] == 1 and stats["conferences"] == 1
        assert {"tick_lateness_p50_ms", "tick_lateness_p99_ms", "ticks", "drops"} <= stats.keys()
        await expect(await http.delete(f"/conferences/room-1/legs/{leg['id']}"), 204)
        await expect(await http.delete(f"/conferences/room-1/legs/{leg['id']}"), 404, "no_such_leg")
        await expect(await http.delete("/conferences/room-1"), 204)
        await expect(await http.get("/conferences/room-1"), 404, "no_such_conference")
        stats = await expect(await http.get("/stats"), 200)
        assert stats["ports_in_use"] == 0 and stats["legs"] == 0

    uvloop.run(with_engine(scenario))


def test_every_error_answers_with_status_and_code():
    async def scenario(http):
        await expect(await http.post("/conferences", json={"mode": "video"}), 400, "unsupported_mode")
        await expect(await http.post("/conferences", json={"id": "a b"}), 400, "bad_id")
        await expect(await http.post("/conferences", json={"id": "x"}), 201)
        await expect(await http.post("/conferences", json={"id": "x"}), 409, "conference_exists")
        await expect(await http.post("/conferences", data=b"{not json"), 400, "bad_json")
        await expect(await http.post("/conferences", data=b"[1, 2]"), 400, "bad_json")
        await expect(await http.post("/conferences", json={"mode": 5}), 422, "bad_field")
        await expect(await http.post("/conferences/x/legs", json={}), 422, "missing_field")
        await expect(await http.post("/conferences/x/legs", json={"sdp": "hello"}), 400, "bad_sdp")
        await expect(await http.post("/conferences/x/legs", json={"sdp": G722_ONLY}), 488,
                     "no_common_codec")
        await expect(await http.post("/conferences/nope/legs", json={"sdp": OFFER}), 404,
                     "no_such_conference")
        await expect(await http.patch("/conferences/x/legs/nope", json={"muted": True}), 404,
                     "no_such_leg")
        await expect(await http.post("/conferences", data=b"x" * 100_000), 413)
        stats = await expect(await http.get("/stats"), 200)
        assert stats["ports_in_use"] == 0, "a refused offer must not keep its port"

    uvloop.run(with_engine(scenario))


def test_voice_options_and_listener_gains_over_http():
    async def scenario(http):
        await expect(await http.post("/conferences", json={"mode": "mcu", "id": "room-v"}), 201)
        one = await expect(await http.post("/conferences/room-v/legs", json={
            "sdp": OFFER, "label": "alice", "noise_suppression": True, "auto_gain": True}), 201)
        two = await expect(await http.post("/conferences/room-v/legs", json={"sdp": OFFER}), 201)
        leg = await expect(await http.patch(f"/conferences/room-v/legs/{two['id']}",
                                            json={"gains": {one["id"]: -9.5}}), 200)
        assert leg["voice_processing"]["gains_db"] == {one["id"]: -9.5}
        leg = await expect(await http.patch(f"/conferences/room-v/legs/{two['id']}",
                                            json={"gains": {one["id"]: None}, "auto_gain": False}), 200)
        assert leg["voice_processing"]["gains_db"] == {}
        path = f"/conferences/room-v/legs/{two['id']}"
        await expect(await http.patch(path, json={"gains": {one["id"]: "loud"}}), 422, "bad_field")
        await expect(await http.patch(path, json={"gains": {one["id"]: True}}), 422, "bad_field")
        await expect(await http.patch(path, json={"gains": [1]}), 422, "bad_field")
        await expect(await http.patch(path, json={"gains": {one["id"]: -100}}), 422, "bad_field")
        await expect(await http.patch(path, json={"gains": {"nobody": 0}}), 404, "no_such_leg")
        await expect(await http.patch(path, json={"noise_suppression": "yes"}), 422, "bad_field")
        await expect(await http.post("/conferences", json={"mode": "sfu", "id": "room-s"}), 201)
        await expect(await http.post("/conferences/room-s/legs", json={
            "sdp": OFFER, "auto_gain": True}), 409, "not_mixed")

    uvloop.run(with_engine(scenario))
