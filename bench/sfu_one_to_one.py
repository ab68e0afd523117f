"""1:1 SRTP forwarding, side by side with rtpengine: packets per CPU-second of the media process.

The shape rtpengine's users run: `--calls` calls (default 1,000), each one sender and one
subscriber, 50 packets/s of real Opus with an RFC 6464 level, SDES-SRTP in and out with different
keys (the media process decrypts and re-encrypts every packet). The media process is pinned to
core 0, the load generator (`sfu_forward.py`'s, one UDP socket for every endpoint, SRTP through
libsrtp) to core 1; both engines get the same generator and the same packets.

- voicemix: one SFU conference per call (the engine's 1:1 shape until calls are relayed).
- rtpengine (Debian's `rtpengine-daemon`, userspace only: `--table=-1`, no kernel module), driven
  over its ng control protocol (bencode over UDP): `offer` with the sender's SDP, `answer` with
  the subscriber's; rtpengine keys the subscriber's side itself (checked: not the sender's key;
  AES_CM_128_HMAC_SHA1_32 there, see SUITE_OUT).

The senders send at `speed` x 50 packets/s each until the media process's core is full; reported:
packets the subscribers received per CPU-second of the media process (user + system, from
/proc/<pid>/stat), loss, and voicemix/rtpengine. The first packets of every subscriber are
authenticated with its own key. The machine is shared: run it twice, compare the ratios.

    python bench/sfu_one_to_one.py                 # ~2 minutes
    python bench/sfu_one_to_one.py --calls 500 --speeds 1 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcu_scale import Child, _engine_main, proc_cpu_s  # noqa: E402
from sfu_forward import ENGINE_CORE, GEN_CORE, HOST, SETTINGS, _loadgen_main  # noqa: E402

NG_PORT = 22290
LOG = "/tmp/sfu_one_to_one.rtpengine.log"
RTPENGINE_PORTS = (30000, 39999)
SUITE = "AES_CM_128_HMAC_SHA1_80"
# rtpengine passes SRTP through untouched when both sides can share the offerer's suite and key
# (its SDES default): the subscriber side gets another suite, so every packet is decrypted and
# re-encrypted with a new key, as in voicemix (which keeps the suite and changes the key).
SUITE_OUT = "AES_CM_128_HMAC_SHA1_32"


# =========================================================================== rtpengine's ng protocol
def bencode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, i: int = 0):
    """(value, next index); byte strings come back as str."""
    kind = data[i:i + 1]
    if kind == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if kind in (b"l", b"d"):
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        return (items if kind == b"l" else dict(zip(items[::2], items[1::2]))), i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1:colon + 1 + length].decode(), colon + 1 + length


class RtpEngine:
    """rtpengine in the foreground on one core, userspace forwarding only, and its ng client."""

    def __init__(self, core: int) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError("rtpengine is not installed (apt-get install rtpengine-daemon)")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), binary, "--config-file=none", "--foreground", "--log-stderr",
             "--log-level=3", "--table=-1", f"--interface={HOST}", f"--listen-ng={HOST}:{NG_PORT}",
             f"--port-min={RTPENGINE_PORTS[0]}", f"--port-max={RTPENGINE_PORTS[1]}",
             "--num-threads=1", "--timeout=600", "--silent-timeout=600"],
            stdout=subprocess.DEVNULL, stderr=open(LOG, "wb"))
        self.pid = self.proc.pid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.command({"command": "ping"})
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("rtpengine did not answer ping")
                time.sleep(0.2)

    def command(self, message: dict) -> dict:
        cookie = secrets.token_hex(6).encode()
        self.sock.sendto(cookie + b" " + bencode(message), (HOST, NG_PORT))
        while True:
            data = self.sock.recv(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                reply, _ = bdecode(body)
                if reply.get("result") not in ("ok", "pong"):
                    raise RuntimeError(f"rtpengine: {reply}")
                return reply

    def call(self, index: int, offer_sdp: str, answer_sdp: str) -> tuple[str, str]:
        """One call: (SDP rtpengine gives the subscriber, SDP it gives the sender), each reduced to
        the key the other side uses. `answer_sdp` (the subscriber's offer) is turned into an answer
        to rtpengine's SUITE_OUT key: same tag and suite, the subscriber's own key."""
        call_id, from_tag, to_tag = f"bench-{index}", f"a{index}", f"b{index}"
        to_subscriber = self.command({"command": "offer", "call-id": call_id, "from-tag": from_tag,
                                      "sdp": offer_sdp, "SDES": [f"only-{SUITE_OUT}"]})["sdp"]
        line = next(m for m in re.finditer(r"^a=crypto:(\d+) (\S+) .*$", to_subscriber, re.M)
                    if m.group(2) == SUITE_OUT)
        answer = answer_sdp.replace(f"a=crypto:1 {SUITE} ", f"a=crypto:{line.group(1)} {SUITE_OUT} ", 1)
        to_sender = self.command({"command": "answer", "call-id": call_id, "from-tag": from_tag,
                                  "to-tag": to_tag, "sdp": answer})["sdp"]
        return _only_crypto(to_subscriber, line.group(0).strip()), to_sender

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _only_crypto(sdp: str, keep: str) -> str:
    return "\r\n".join(line for line in sdp.replace("\r\n", "\n").split("\n")
                       if not line.startswith("a=crypto:") or line == keep) + "\r\n"


def _key_of(sdp: str) -> str:
    return re.search(r"inline:([^| \r\n]+)", sdp).group(1)


# ==================================================================================== orchestration
def setup_voicemix(gen: Child, calls: int) -> tuple[Child, list[str]]:
    ctx = multiprocessing.get_context("spawn")
    # sfu_max_packet_age_ms: on this shared machine the engine's process is sometimes scheduled
    # out for 100 ms and more; it would then drop what waited (its stall policy) where rtpengine
    # forwards it late. Both forward everything here: the comparison is of cost per packet.
    settings = {**SETTINGS, "sfu_max_packet_age_ms": 2000.0}
    if "max_conferences" in _settings_fields():
        settings["max_conferences"] = calls + 10
    engine = Child(ctx, _engine_main, ENGINE_CORE, settings)
    offers = gen.call("offers", 2 * calls)
    answers: list[str] = []
    conferences = []
    for k in range(calls):
        conference = engine.call("create", "sfu")
        conferences.append(conference)
        answers += engine.call("add_legs", conference, offers[2 * k:2 * k + 2], timeout=60)
    gen.call("answers", answers)
    return engine, conferences


def _settings_fields() -> set[str]:
    from mixer.settings import EngineSettings

    return set(EngineSettings.model_fields)


def setup_rtpengine(gen: Child, calls: int) -> tuple[RtpEngine, int]:
    """Returns rtpengine and how many calls had a subscriber key equal to the sender's (0 when
    rtpengine re-keys every leg, as it should)."""
    engine = RtpEngine(ENGINE_CORE)
    try:
        offers = gen.call("offers", 2 * calls)
        answers: list[str] = []
        same_key = 0
        for k in range(calls):
            to_subscriber, to_sender = engine.call(k, offers[2 * k], offers[2 * k + 1])
            same_key += _key_of(to_subscriber) == _key_of(offers[2 * k])
            answers += [to_sender, to_subscriber]
        gen.call("answers", answers)
    except BaseException:
        engine.close()
        raise
    return engine, same_key


def run_once(gen: Child, pid: int, senders: list[int], speed: float, seconds: float,
             engine: Child | None = None) -> dict:
    gen.call("run", senders, len(senders), speed, 1.0)  # warm up: paths learnt, slots filled
    before = engine.call("snapshot") if engine is not None else None
    user0, sys0 = proc_cpu_s(pid)
    began = time.monotonic()
    result = gen.call("run", senders, len(senders), speed, seconds, timeout=seconds + 60)
    user1, sys1 = proc_cpu_s(pid)
    wall = time.monotonic() - began
    cpu = (user1 - user0) + (sys1 - sys0)
    drops = {}
    if engine is not None:
        after = engine.call("snapshot")
        drops = {k: v - before["drops"].get(k, 0) for k, v in after["drops"].items()
                 if v - before["drops"].get(k, 0)}
        stale = sum(c.get("packets_stale", 0) for c in after["conferences"].values()) - sum(
            c.get("packets_stale", 0) for c in before["conferences"].values())
        if stale:
            drops["stale"] = stale
    return {"speed": speed, "cpu_s": cpu, "busy": cpu / wall, "sent": result["sent"],
            "received": result["received"], "per_cpu_s": result["received"] / cpu if cpu else 0.0,
            "loss": 1.0 - result["received"] / max(result["sent"], 1),
            "kernel": (sys1 - sys0) / max(cpu, 1e-9), "behind": result["behind"],
            "srtp_checked": result["srtp_checked"], "srtp_failed": result["srtp_failed"],
            "drops": drops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0, 1.5, 2.5])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", choices=("voicemix", "rtpengine"))
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs two cores (media process and load generator each on its own)")
        return 1
    ctx = multiprocessing.get_context("spawn")
    senders = list(range(0, 2 * args.calls, 2))
    print(f"1:1 SRTP forwarding, {args.calls} calls x 50 packets/s x speed; media process alone on "
          f"core {ENGINE_CORE}, generator on core {GEN_CORE}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'engine':10} {'speed':>5} {'sent/s':>8} {'core busy':>9} {'pkts per CPU-s':>14} "
          f"{'loss':>6} {'kernel':>6} {'SRTP ok':>8}")
    best: dict[str, float] = {}
    for name in ("voicemix", "rtpengine"):
        if args.only and name != args.only:
            continue
        for speed in args.speeds:
            gen = Child(ctx, _loadgen_main, GEN_CORE)
            engine = None
            try:
                if name == "voicemix":
                    engine, _ = setup_voicemix(gen, args.calls)
                else:
                    try:
                        engine, same_key = setup_rtpengine(gen, args.calls)
                    except RuntimeError as exc:
                        print(f"{name:10} skipped: {exc}")
                        break
                    if same_key:
                        print(f"{name:10} WARNING: {same_key} calls kept the sender's key (no re-keying)")
                r = run_once(gen, engine.pid, senders, speed, args.seconds,
                             engine if name == "voicemix" else None)
            finally:
                gen.close()
                if engine is not None:
                    engine.close()
            ok = f"{r['srtp_checked'] - r['srtp_failed']}/{r['srtp_checked']}"
            print(f"{name:10} {speed:5.1f} {r['sent'] / args.seconds:8.0f} {r['busy'] * 100:8.0f}% "
                  f"{r['per_cpu_s']:14.0f} {r['loss'] * 100:5.1f}% {r['kernel'] * 100:5.0f}% {ok:>8}"
                  + ("  (generator fell behind)" if r["behind"] else "")
                  + (f"  drops {r['drops']}" if r["drops"] else ""))
            if r["loss"] < 0.001:  # a rate counts only when nothing was lost
                best[name] = max(best.get(name, 0.0), r["per_cpu_s"])
    for name, rate in best.items():
        print(f"best lossless {name}: {rate / 1000:.1f}k packets per CPU-second")
    if len(best) == 2:
        print(f"voicemix / rtpengine: {best['voicemix'] / best['rtpengine']:.2f}x (target >= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
