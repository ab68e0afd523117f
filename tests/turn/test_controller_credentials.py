"""The contract between the controller and TURN: credentials from `GET /v1/turn/credentials`
(API.md: `username = "<unix expiry>:<identity>"`, `credential = base64(HMAC-SHA1(secret, username))`)
open an allocation on our TURN server configured with the same `VOICEMIX_TURN_SECRET`."""
import uvloop

from controller.testing import running_controller
from mixer.turn.client import TurnClient
from mixer.turn.testing import UdpPeer, running_server


def test_credentials_issued_by_the_controller_allocate_and_relay(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, turn_secret="shared-turn-secret") as c:
            alice = await c.user("alice")
            response = await c.client.get("/v1/turn/credentials", headers=alice)
            assert response.status_code == 200, response.text
            issued = response.json()
            assert issued["username"].endswith(":alice")
            async with running_server(secret="shared-turn-secret", static_users={}) as turn:
                client = await TurnClient(turn.tcp_address, issued["username"], issued["credential"]).connect()
                relayed = await client.allocate()
                peer = await UdpPeer.open(echo=True)
                number = await client.channel_bind(peer.address)
                client.send_channel(number, b"through the relay")
                assert (await peer.next())[0] == b"through the relay"
                assert turn.stats()["allocation_list"][0]["user"] == "alice"
                assert relayed[0] == "127.0.0.1"
                peer.close(), client.close()
    uvloop.run(scenario())


def test_voicemix_serve_wires_the_generated_secret_into_its_turn_server(tmp_path):
    """`voicemix serve` starts TURN with the controller's own TURN secret (generated on first start
    when none is configured), so the credentials the controller hands out work on that server."""
    from controller.serve import start_turn

    async def scenario():
        async with running_controller(tmp_path, turn_listen="127.0.0.1:0") as c:
            assert c.server.settings.turn_secret  # generated, not configured
            turn = await start_turn(c.server.settings)
            try:
                alice = await c.user("alice")
                issued = (await c.client.get("/v1/turn/credentials", headers=alice)).json()
                client = await TurnClient(turn.tcp_address, issued["username"], issued["credential"]).connect()
                relayed = await client.allocate()
                assert relayed[0] == "127.0.0.1"
                client.close()
            finally:
                await turn.stop()
    uvloop.run(scenario())
