"""Running a phone tree for one caller.

The caller's leg sits alone in an MCU conference of its own on an engine; prompts are engine
players in that conference (everyone in it hears them: the caller); keys come from the leg's
digits (RFC 4733 events and in-band tones, both decoded by the engine and read from the leg's
stats every POLL_S) and from SIP INFO. A key pressed during a menu's prompt cuts the prompt short
(barge-in). `transfer` moves the caller's leg into the target call (the engine keeps its port,
SSRC and numbering; across engines a re-INVITE points the carrier at a new leg), or rings a user
while the caller hears a ringing tone; `record` has the engine record the conference's mix (an
Ogg Opus file, indexed as a recording the admin can read); `hangup` plays its prompt and sends
BYE. Prompt files are the engine's to find (in its player directories): the controller names
them. A tree
runs at most MAX_VISITS nodes (a caller pressing keys round a menu for ever is hung up).

What happens is published on the number's event stream (`GET /v1/numbers/{number}/events`):
`ivr_started`, `ivr_node {node}`, `dtmf {digit}`, `ivr_transferred {call}`, `ivr_ended
{reason, path, digits}`; the record of the call (kind `pstn`) keeps the path and the digits.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

from controller.pstn.ivr import MAX_VISITS, Node, PhoneTree, Prompt
from mixer.engine.client import EngineError

if TYPE_CHECKING:
    from controller.pstn.service import PstnService
    from controller.pstn.sipleg import SipLeg

log = logging.getLogger("voicemix.pstn")

POLL_S = 0.1
RINGBACK_HZ = 425.0       # ITU-T E.180 ringing tone, while a transfer to a user rings


def number_channel(number: str) -> str:
    """The event stream of one number's phone tree."""
    return f"number:{number}"


class Hangup(Exception):
    """The caller hung up."""


class IvrRunner:
    def __init__(self, service: PstnService, leg: SipLeg, tree: PhoneTree, engine, conference: str) -> None:
        self.service = service
        self.leg = leg
        self.tree = tree
        self.engine = engine
        self.conference = conference
        self.info = leg.history["info"]
        self.channel = number_channel(self.info["number"])
        self.path: list[str] = []
        self.digits = ""
        self._keys: asyncio.Queue[str] = asyncio.Queue()
        self._seen = 0
        self.transferred_to: str | None = None
        self.recording_id: str | None = None
        leg.on_digit = self._keys.put_nowait   # SIP INFO digits

    # --------------------------------------------------------------------------------- events
    def _note(self) -> None:
        """Keep the path and digits in the call's info (the record, and a transferred caller's
        participant, carry them)."""
        self.info["ivr"] = {"path": list(self.path), "digits": self.digits,
                            "recording_id": self.recording_id, "transferred_to": self.transferred_to}

    def publish(self, event: str, **data) -> None:
        self.service.events.publish(self.channel, event, {"participant_id": self.leg.leg_id,
                                                          "caller": self.info["caller"], **data})

    # -------------------------------------------------------------------------------- the run
    async def run(self) -> None:
        reason = "hangup"
        self.publish("ivr_started", number=self.info["number"])
        poller = asyncio.get_running_loop().create_task(self._poll_digits())
        try:
            node_id: str | None = self.tree.start
            visits = 0
            while node_id is not None:
                visits += 1
                if visits > MAX_VISITS:
                    reason = "too_many_steps"
                    break
                node = self.tree.nodes[node_id]
                self.path.append(node_id)
                self._note()
                self.publish("ivr_node", node=node_id)
                node_id = await self._step(node)
            if self.transferred_to is not None:
                reason = "transferred"
        except Hangup:
            reason = "caller_hung_up"
        except EngineError as exc:
            log.warning("IVR for %s: the engine failed (%s)", self.info["caller"], exc)
            reason = "engine_failed"
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            self.leg.on_digit = None
        self.publish("ivr_ended", reason=reason, path=self.path, digits=self.digits)
        self._note()
        if self.transferred_to is None:
            await self._hang_up(reason)

    async def _step(self, node: Node) -> str | None:
        if node.action == "play":
            await self.play(node.prompt)
            return node.next
        if node.action == "gather":
            return await self.gather(node)
        if node.action == "record":
            await self.record(node)
            return node.next
        if node.action == "transfer":
            await self.transfer(node)
            return None
        if node.prompt is not None:   # hangup
            await self.play(node.prompt)
        return None

    async def _hang_up(self, reason: str) -> None:
        self.leg.closing = True
        if not self.leg.session.is_terminated:
            await self.leg.session.bye()
        with contextlib.suppress(EngineError):
            await self.engine.delete_conference(self.conference)
        await self.service._finish(self.leg, f"ivr_{reason}", None)

    # ---------------------------------------------------------------------------------- keys
    async def _poll_digits(self) -> None:
        """Keys the engine decoded on the caller's leg (RFC 4733 and in-band) into the queue."""
        while True:
            await asyncio.sleep(POLL_S)
            if self.leg.session.is_terminated:
                self._keys.put_nowait("")   # wakes whoever waits: the caller is gone
                return
            try:
                stats = await self.engine.get_leg(self.conference, self.leg.leg_id)
            except EngineError:
                return   # moved to a call, or gone
            dtmf = stats.get("dtmf") or {}
            total = dtmf.get("total", 0)
            if total > self._seen:
                for key in dtmf.get("digits", "")[-(total - self._seen):]:
                    self._keys.put_nowait(key)
                self._seen = total

    def _alive(self) -> None:
        if self.leg.session.is_terminated:
            raise Hangup()

    async def _next_key(self, timeout: float) -> str | None:
        try:
            key = await asyncio.wait_for(self._keys.get(), timeout)
        except asyncio.TimeoutError:
            self._alive()
            return None
        self._alive()
        if key:
            self.digits += key
            self._note()
            self.publish("dtmf", digit=key)
        return key or None

    # --------------------------------------------------------------------------------- prompts
    async def play(self, prompt: Prompt | None, interruptible: bool = False) -> str | None:
        """Play a prompt to its end (or, when `interruptible`, until a key: returned)."""
        self._alive()
        if prompt is None:
            return None
        if prompt.tone_hz is None and prompt.file is None and prompt.recording is None:
            return await self._wait(prompt.ms / 1000.0, interruptible)   # silence
        kwargs: dict = {"label": "ivr-prompt"}
        if prompt.tone_hz is not None:
            kwargs.update(tone=prompt.tone_hz, seconds=prompt.ms / 1000.0)
        else:
            kwargs["file"] = await self._prompt_file(prompt)
        try:
            player = await self.engine.add_player(self.conference, **kwargs)
        except EngineError as exc:
            if exc.status not in (403, 404, 422):
                raise
            # a prompt file gone or unplayable: the tree goes on without it, and says so
            log.warning("IVR %s: prompt %s not played: %s", self.info["number"], kwargs["file"], exc)
            self.publish("ivr_prompt_failed", file=prompt.file or prompt.recording, code=exc.code)
            return None
        try:
            while True:
                key = await self._wait(POLL_S, interruptible)
                if key is not None:
                    return key
                state = (await self.engine.get_player(self.conference, player["id"]))["state"]
                if state != "playing":
                    return None
        finally:
            with contextlib.suppress(EngineError):
                await self.engine.remove_player(self.conference, player["id"])

    async def _wait(self, seconds: float, interruptible: bool) -> str | None:
        if not interruptible:
            await asyncio.sleep(seconds)
            self._alive()
            return None
        return await self._next_key(seconds)

    async def _prompt_file(self, prompt: Prompt) -> str:
        """A prompt file's name (the engine looks in its player directories), or a finished
        recording's mix (in the engine's recordings directory)."""
        if prompt.file:
            return prompt.file
        recording = await self.service.store.get_recording(prompt.recording)
        if recording is None or recording["ended_at"] is None:
            raise EngineError(404, "no_such_recording", f"no finished recording {prompt.recording}")
        return recording["path"]

    # ---------------------------------------------------------------------------------- nodes
    async def gather(self, node: Node) -> str | None:
        """Collect up to `digits` keys (ended early by `finish_on`, or by `timeout_s` without a
        key); branch on them. Invalid keys go to `default`, or retry; nothing pressed retries,
        then goes to `no_input`; retries spent with nowhere to go: hang up."""
        for _attempt in range(node.retries + 1):
            self._drain_stale_keys()
            collected = ""
            key = await self.play(node.prompt, interruptible=True)
            while True:
                if key is None:
                    key = await self._next_key(node.timeout_s)
                if key is None:
                    break
                if node.finish_on and key == node.finish_on:
                    break
                collected += key
                if len(collected) >= node.digits or collected in node.branches and \
                        not any(b != collected and b.startswith(collected) for b in node.branches):
                    break
                key = None
            if collected in node.branches:
                return node.branches[collected]
            if collected and node.default:
                return node.default
            if not collected and node.retries == _attempt and node.no_input:
                return node.no_input
        return None

    def _drain_stale_keys(self) -> None:
        while not self._keys.empty():
            key = self._keys.get_nowait()
            if not key:
                raise Hangup()

    async def record(self, node: Node) -> None:
        """A message: the prompt, then the caller's audio until `max_s`, `finish_on` or hangup,
        recorded by the engine (the mix of the caller's conference, Ogg Opus)."""
        await self.play(node.prompt)
        recording_id = secrets.token_hex(8)
        started = time.time()
        meta = await self.engine.start_recording(self.conference, format="ogg", tracks="mix",
                                                 recording_id=recording_id)
        try:
            await self.service.store.add_recording(recording_id, f"ivr:{self.info['number']}",
                                                   meta["path"], [], started, fmt="ogg",
                                                   engine=self.engine.name)
        except BaseException:
            with contextlib.suppress(EngineError):
                await self.engine.stop_recording(self.conference, recording_id)
            raise
        deadline = asyncio.get_running_loop().time() + node.max_s
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                key = await self._next_key(remaining)
                if key is not None and node.finish_on and key == node.finish_on:
                    break
        except Hangup:
            pass
        finally:
            try:
                final = await self.engine.stop_recording(self.conference, recording_id)
            except EngineError:   # the caller hung up: the conference went, and finished it
                final = await self._recording_info(recording_id)
            duration = float(final.get("duration_s") or 0.0)
            await self.service.store.finish_recording(recording_id, [], time.time(), duration,
                                                      state=final.get("state", "stopped"))
            self.recording_id = recording_id
            self.publish("ivr_recorded", recording_id=recording_id, duration_s=round(duration, 3))
        self._alive()

    async def _recording_info(self, recording_id: str) -> dict:
        try:
            return await self.engine.recording_info(recording_id)
        except EngineError as exc:
            log.warning("IVR recording %s: no final metadata: %s", recording_id, exc)
            return {"state": "interrupted", "duration_s": 0.0}

    async def transfer(self, node: Node) -> None:
        target = node.target
        if "call" in target:
            self.transferred_to = target["call"]
            self._note()
            if await self.service.transfer_to_call(self.leg, target["call"]):
                self.publish("ivr_transferred", call=target["call"])
            else:
                self.transferred_to = None
            return
        ringing = await self.engine.add_player(self.conference, tone=RINGBACK_HZ, label="ringing")
        try:
            ring = asyncio.ensure_future(self.service.transfer_to_user(self.leg, target["user"]))
            joined = await ring
        finally:
            with contextlib.suppress(EngineError):
                await self.engine.remove_player(self.conference, ringing["id"])
        if joined:
            self.transferred_to = self.leg.call_id
            self.publish("ivr_transferred", call=self.leg.call_id, user=target["user"])
