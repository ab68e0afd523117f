"""The seed's direct 1:1 path: two WebRTC clients send media to each other, the controller only
relays their signaling; when the call grows, both move onto the engine without ending the call.

Flow (docs/webrtc.md has it with the events):
1. A call starts with `"media": "direct"` (setting `DIRECT_ONE_TO_ONE`, on by default).
2. Each WebRTC client registers: `POST /v1/calls/{id}/direct` -> a participant (id `d-...`) and a
   role. The first waits (`answerer`); the second is told to offer to the first (`offerer`).
3. Offer, answer and trickled candidates go through `POST /v1/calls/{id}/signal`; each becomes a
   `signal` event on the call's stream, addressed by participant id. Both clients got STUN and
   TURN servers from `/v1/turn/credentials` (our STUN for NAT, our TURN when nothing else works).
4. Anything that needs the engine (a third participant, an SDP participant, a bot, a recording)
   switches the call to `"media": "engine"` and publishes `media_moved` once, naming the direct
   participants. Each offers to the engine (`POST /v1/calls/{id}/participants {"sdp", "replaces":
   "<its d- id>"}`); its direct participant is replaced by the engine leg. Clients keep the direct
   connection playing until their engine connection is up and their peer has moved too, so
   neither hears a gap (measured in the tests).
"""
from __future__ import annotations

import asyncio
import secrets
import time

from controller import cdr
from controller.errors import ApiError

DIRECT, ENGINE = "direct", "engine"
SIGNAL_TYPES = ("offer", "answer", "candidate", "bye")
MAX_DIRECT_PEERS = 2
MOVE_DEADLINE_S = 30.0  # a direct participant not moved onto the engine by then is removed


def is_direct(participant: dict) -> bool:
    return participant.get("media") == DIRECT


class DirectPath:
    """The direct-path operations of a CallService (its registry, events and settings)."""

    def __init__(self, service) -> None:
        self.service = service
        self.moves = 0
        self.signals_relayed = 0
        self._expiring: set[str] = set()

    async def register(self, principal, call_id: str, label: str | None) -> dict:
        """Register the caller as a direct peer of the call; 409 media_on_engine when the call
        already runs (or must now run) on the engine: the client then offers to the engine."""
        service = self.service
        call = await service.access(principal, call_id, allow_invited=True)
        if principal.identity is None:
            raise ApiError(403, "identity_required", "only identities join calls")
        if call.get("media") != DIRECT:
            raise ApiError(409, "media_on_engine", "this call's media runs on the engine: POST your "
                                                   "offer to /v1/calls/{id}/participants")
        peers = [p for p in call["participants"].values() if is_direct(p)]
        if len(peers) >= MAX_DIRECT_PEERS or len(call["participants"]) >= MAX_DIRECT_PEERS:
            await self.move_to_engine(call, "third_participant")
            raise ApiError(409, "media_on_engine", "the call has two participants already: it moves "
                                                   "to the engine; POST your offer to /participants")
        participant = {"id": f"d-{secrets.token_hex(6)}", "kind": "voip",
                       "identity": principal.identity, "label": label or principal.identity,
                       "muted": False, "joined_at": time.time(), "codec": None, "media": DIRECT}
        await service.registry.add_member(call_id, principal.identity)
        await service._admit(call, participant)
        # Roles from the registry as it is now, by joining order, so that two clients registering
        # at the same moment (each having seen no peer) still agree on who offers: the later one.
        fresh = await service.registry.get(call_id) or call
        ordered = sorted((p for p in fresh["participants"].values() if is_direct(p)),
                         key=lambda p: (p["joined_at"], p["id"]))
        others = [p for p in ordered if p["id"] != participant["id"]]
        later = bool(others) and ordered[-1]["id"] == participant["id"]
        return {"id": participant["id"], "role": "offerer" if later else "answerer",
                "peer": others[0]["id"] if others else None, "media": DIRECT}

    async def signal(self, principal, call_id: str, body: dict) -> None:
        """Relay one offer/answer/candidate/bye from one direct peer to the other."""
        call = await self.service.access(principal, call_id)
        sender = call["participants"].get(body["from"])
        target = call["participants"].get(body["to"])
        if sender is None or target is None or not is_direct(sender) or not is_direct(target):
            raise ApiError(404, "no_such_peer", "'from' and 'to' must be direct participants of "
                                                "this call")
        if not principal.is_admin and sender.get("identity") != principal.identity:
            raise ApiError(403, "not_your_participant", "signal only from your own participant")
        signal = {"type": body["type"]}
        for key in ("sdp", "candidate"):
            if body.get(key) is not None:
                signal[key] = body[key]
        self.signals_relayed += 1
        self.service.events.publish(call_id, "signal", {"from": body["from"], "to": body["to"],
                                                        "signal": signal})

    async def move_to_engine(self, call: dict, reason: str) -> None:
        """Switch the call's media to the engine (once) and tell its direct peers to offer there."""
        service = self.service
        if call.get("media") != DIRECT:
            return
        if not await service.registry.set_if_absent(call["id"], "moved_at", cdr.iso(time.time())):
            return  # another request moved it first
        await service.registry.update(call["id"], media=ENGINE)
        call["media"] = ENGINE
        peers = sorted(p["id"] for p in call["participants"].values() if is_direct(p))
        self.moves += 1
        service.events.publish(call["id"], "media_moved", {"to": ENGINE, "reason": reason,
                                                           "participant_ids": peers})

    async def replaced(self, call: dict, direct_id: str, principal) -> dict | None:
        """The direct participant an engine join replaces (checked: the caller's own), removed
        from the call with its CDR (reason moved_to_engine); None if it is already gone."""
        participant = call["participants"].get(direct_id)
        if participant is None:
            return None
        if not is_direct(participant):
            raise ApiError(422, "bad_field", "'replaces' names a direct participant (d-...)")
        if not principal.is_admin and participant.get("identity") != principal.identity:
            raise ApiError(403, "not_your_participant", "'replaces' must be your own participant")
        await self.service.remove_participant(None, call["id"], direct_id, "moved_to_engine")
        return participant

    def expire_unmoved(self, call: dict, remove) -> None:
        """Direct participants still there MOVE_DEADLINE_S after the call moved (a client that
        went away without leaving) are removed with reason `direct_not_moved`."""
        moved_at = call.get("moved_at")
        if call.get("media") != ENGINE or not moved_at:
            return
        if time.time() - cdr.parse_iso(moved_at) < MOVE_DEADLINE_S:
            return
        for participant in list(call["participants"].values()):
            if is_direct(participant) and participant["id"] not in self._expiring:
                self._expiring.add(participant["id"])
                task = asyncio.get_running_loop().create_task(
                    remove(call["id"], participant["id"], "direct_not_moved"))
                task.add_done_callback(lambda _t, pid=participant["id"]: self._expiring.discard(pid))
                self.service._cleanups.add(task)
                task.add_done_callback(self.service._cleanups.discard)

    def stats(self) -> dict:
        return {"moves_to_engine": self.moves, "signals_relayed": self.signals_relayed}
