"""`voicemix top [URL]` (a live view in the terminal) and `voicemix stats --json [URL]` (one snapshot
for scripts), against a media engine's control API or a controller's REST API.

URL defaults to the local engine (`http://127.0.0.1:8790`). A controller is recognised by its
`/v1/health`; it needs the admin key (`--admin-key`, `VOICEMIX_ADMIN_KEY`, or the `secrets.json`
of `--data-dir` / `VOICEMIX_DATA_DIR` when run on the controller's host) and trusts the
controller's self-signed certificate from that data directory (or `--cacert`, or `--insecure`).

A snapshot is one plain dict: engines (load, tick lateness, packet rates), conferences (mode,
legs, speakers) and the legs of the busiest conferences with their quality: RFC 3550 jitter, loss,
RTCP round trip, and an E-model MOS (`controller/emodel.py`, as in the CDRs). Rates come from the
difference between two snapshots.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from controller import emodel

DEFAULT_URL = "http://127.0.0.1:8790"
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "voicemix"
MAX_CONFERENCES_DETAILED = 8   # conferences whose legs are fetched per refresh (the busiest)
MAX_LEGS_SHOWN = 40
# G.107 Annex B user satisfaction: MOS 4.03 (R 80) "satisfied", 3.60 (R 70) "some users dissatisfied"
MOS_GOOD = 4.0
MOS_FAIR = 3.6


class TopError(Exception):
    """The target cannot be read (unreachable, refused, not a voicemix service)."""


# ------------------------------------------------------------------------------------ fetching
class Target:
    """One engine or controller to read snapshots from."""

    def __init__(self, url: str, admin_key: str | None = None, cafile: str | None = None,
                 insecure: bool = False, timeout_s: float = 3.0,
                 control_secret: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.control_secret = control_secret  # an engine's (VOICEMIX_CONTROL_SECRET)
        self.timeout_s = timeout_s
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            self.context = ssl.create_default_context(cafile=cafile)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.kind: str | None = None

    def get(self, path: str, auth: bool = False) -> tuple[int, object]:
        request = urllib.request.Request(self.url + path)
        if auth and self.admin_key:
            request.add_header("Authorization", f"Bearer {self.admin_key}")
        elif self.control_secret and not path.startswith("/v1/"):  # an engine's control API
            request.add_header("Authorization", f"Bearer {self.control_secret}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TopError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None

    def detect(self) -> str:
        if self.kind is None:
            status, body = self.get("/v1/health")
            if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                self.kind = "controller"
            else:
                status, body = self.get("/stats")
                if status != 200 or not isinstance(body, dict) or "ticks" not in body:
                    raise TopError(f"{self.url} is neither a voicemix engine nor a controller")
                self.kind = "engine"
        return self.kind

    def snapshot(self) -> dict:
        kind = self.detect()
        result = {"source": self.url, "kind": kind, "time": time.time(), "engines": [],
                  "conferences": [], "legs": []}
        if kind == "engine":
            _, stats = self.get("/stats")
            result["engines"].append(engine_row("engine", stats))
            _, listed = self.get("/conferences")
            conferences = [{**c, "engine": "engine"} for c in (listed or {}).get("conferences", [])]
            result["conferences"] = conferences
            for conference in busiest(conferences):
                status, detail = self.get(f"/conferences/{conference['id']}")
                if status == 200:
                    result["legs"].extend(leg_row(conference, leg) for leg in detail["legs"])
        else:
            if not self.admin_key:
                raise TopError("a controller needs the admin key: --admin-key, VOICEMIX_ADMIN_KEY, "
                               "or --data-dir of the controller")
            status, stats = self.get("/v1/stats", auth=True)
            if status != 200:
                code = (stats or {}).get("error", {}).get("code") if isinstance(stats, dict) else None
                raise TopError(f"{self.url}/v1/stats answered {status} {code or ''}".rstrip())
            result["controller"] = stats["controller"]
            for name, engine in sorted(stats["engines"].items()):
                result["engines"].append(engine_row(name, engine))
            result["conferences"] = stats.get("calls", [])
            for call in busiest(result["conferences"]):
                status, detail = self.get(f"/v1/calls/{call['id']}", auth=True)
                if status == 200:
                    for participant in detail["participants"]:
                        leg = {"id": participant["id"], "label": participant.get("label"),
                               "kind": participant.get("kind"), **(participant.get("stats") or {})}
                        result["legs"].append(leg_row(call, leg, flat=True))
        return result


def busiest(conferences: list[dict]) -> list[dict]:
    return sorted(conferences, key=lambda c: -c.get("legs", 0))[:MAX_CONFERENCES_DETAILED]


def engine_row(name: str, stats: dict) -> dict:
    if "error" in stats:
        return {"name": name, "state": "down", "error": stats["error"]}
    return {"name": name, "state": "draining" if stats.get("draining") else "up",
            "conferences": stats.get("conferences", 0), "legs": stats.get("legs", 0),
            "ports_in_use": stats.get("ports_in_use", 0), "uptime_s": stats.get("uptime_s", 0.0),
            "ticks": stats.get("ticks", 0), "skipped_ticks": stats.get("skipped_ticks", 0),
            "tick_lateness_p50_ms": stats.get("tick_lateness_p50_ms"),
            "tick_lateness_p99_ms": stats.get("tick_lateness_p99_ms"),
            "tick_busy_ms_mean": stats.get("tick_busy_ms_mean"),
            "packets_in": stats.get("packets_in", 0), "packets_out": stats.get("packets_out", 0),
            "drops": sum((stats.get("drops") or {}).values())}


def leg_row(conference: dict, leg: dict, flat: bool = False) -> dict:
    """One leg's quality; `flat`: the controller's per-participant summary, else the engine's."""
    if flat:
        jitter, loss, rtt = leg.get("jitter_ms"), leg.get("loss_percent"), leg.get("rtt_ms")
        target = leg.get("jitter_buffer_ms")
    else:
        receive, rtcp = leg.get("receive") or {}, leg.get("rtcp") or {}
        jitter, loss, rtt = receive.get("jitter_ms"), receive.get("loss_percent"), rtcp.get("rtt_ms")
        target = (leg.get("jitter_buffer") or {}).get("target_delay_ms")
    codec = leg.get("codec") or "opus"
    mos = None
    if leg.get("packets_in"):
        mos = emodel.quality(codec, loss or 0.0, rtt, target or 0.0)["mos"]
    return {"conference": conference["id"], "id": leg["id"], "label": leg.get("label"),
            "codec": codec, "srtp": leg.get("srtp"), "muted": leg.get("muted"),
            "talking": bool(leg.get("talking") or leg.get("forwarded")),
            "jitter_ms": jitter, "loss_percent": loss, "rtt_ms": rtt, "jitter_buffer_ms": target,
            "mos": mos, "packets_in": leg.get("packets_in", 0), "packets_out": leg.get("packets_out", 0)}


def rates(now: dict, before: dict | None) -> dict[str, dict]:
    """Per engine: packets in/out and drops per second between two snapshots."""
    result = {}
    if before is None:
        return result
    elapsed = max(now["time"] - before["time"], 1e-3)
    previous = {e["name"]: e for e in before["engines"]}
    for engine in now["engines"]:
        old = previous.get(engine["name"])
        if old is None or engine["state"] == "down" or old["state"] == "down":
            continue
        result[engine["name"]] = {key: max(0.0, (engine[key] - old[key]) / elapsed)
                                  for key in ("packets_in", "packets_out", "drops")}
    return result


# ----------------------------------------------------------------------------------- rendering
def render(snapshot: dict, before: dict | None = None):
    """The snapshot as rich renderables (a Group), for a Live display or a test's Console."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    per_second = rates(snapshot, before)
    header = Text.assemble(("voicemix top ", "bold"), f"{snapshot['kind']} {snapshot['source']}  ",
                           time.strftime("%H:%M:%S", time.localtime(snapshot["time"])))
    parts = [header]
    if "controller" in snapshot:
        c = snapshot["controller"]
        parts.append(Text(f"controller: calls here {c.get('calls_local', 0)}, created "
                          f"{c.get('calls_created', 0)}, ended {c.get('calls_ended', 0)}, "
                          f"engine failures {c.get('calls_engine_failed', 0)}"))
    engines = Table(title="engines", title_justify="left", expand=True)
    for column in ("engine", "state", "confs", "legs", "late p50/p99 ms", "skipped", "busy ms",
                   "pkts in/s", "pkts out/s", "drops/s"):
        engines.add_column(column, justify="left" if column in ("engine", "state") else "right")
    for e in snapshot["engines"]:
        if e["state"] == "down":
            engines.add_row(e["name"], Text("down", style="red"), *[""] * 8)
            continue
        r = per_second.get(e["name"])
        engines.add_row(e["name"], Text(e["state"], style="yellow" if e["state"] == "draining" else "green"),
                        str(e["conferences"]), str(e["legs"]),
                        f"{_num(e['tick_lateness_p50_ms'])}/{_num(e['tick_lateness_p99_ms'])}",
                        str(e["skipped_ticks"]), _num(e["tick_busy_ms_mean"]),
                        _num(r["packets_in"], 0) if r else "-", _num(r["packets_out"], 0) if r else "-",
                        _num(r["drops"], 0) if r else "-")
    parts.append(engines)
    labels = {leg["id"]: leg["label"] or leg["id"] for leg in snapshot["legs"]}
    conferences = Table(title="conferences", title_justify="left", expand=True)
    for column in ("conference", "mode", "engine", "legs", "speakers"):
        conferences.add_column(column)
    for conf in sorted(snapshot["conferences"], key=lambda c: -c.get("legs", 0)):
        speakers = ", ".join(labels.get(s, s) for s in conf.get("speakers") or []) or "-"
        conferences.add_row(conf["id"], conf.get("mode", "?"), str(conf.get("engine", "")),
                            str(conf.get("legs", 0)), speakers)
    parts.append(conferences)
    legs = Table(title="legs (busiest conferences)", title_justify="left", expand=True)
    text_columns = ("conference", "leg", "label", "codec", "talk")
    for column in (*text_columns, "jitter ms", "loss %", "rtt ms", "jb ms", "MOS", "in", "out"):
        legs.add_column(column, justify="left" if column in text_columns else "right")
    shown = sorted(snapshot["legs"],
                   key=lambda leg: (not leg["talking"], leg["conference"], leg["label"] or ""))
    for leg in shown[:MAX_LEGS_SHOWN]:
        mos = leg["mos"]
        style = "" if mos is None else ("green" if mos >= MOS_GOOD else
                                        "yellow" if mos >= MOS_FAIR else "red")
        codec = leg["codec"] + (" srtp" if leg["srtp"] else "")
        legs.add_row(leg["conference"], leg["id"], leg["label"] or "", codec,
                     "*" if leg["talking"] else "", _num(leg["jitter_ms"]),
                     _num(leg["loss_percent"]), _num(leg["rtt_ms"]),
                     _num(leg["jitter_buffer_ms"], 0), Text(_num(mos, 2), style=style),
                     str(leg["packets_in"]), str(leg["packets_out"]))
    if len(shown) > MAX_LEGS_SHOWN:
        legs.caption = f"{len(shown) - MAX_LEGS_SHOWN} more legs not shown"
    parts.append(legs)
    return Group(*parts)


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", default=DEFAULT_URL,
                        help=f"engine control URL or controller URL (default {DEFAULT_URL})")
    parser.add_argument("--admin-key", help="the controller's admin key (default: "
                        "VOICEMIX_ADMIN_KEY, or the data directory's secrets.json)")
    parser.add_argument("--data-dir", help="the controller's data directory (admin key, certificate)")
    parser.add_argument("--cacert", help="CA or certificate file to trust for https")
    parser.add_argument("--insecure", action="store_true", help="do not verify the https certificate")
    parser.add_argument("--json", action="store_true", help="stats: print the snapshot as JSON")
    parser.add_argument("--interval", type=float, default=1.0, help="top: seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="top: print one screen and exit")


def target_from(args: argparse.Namespace) -> Target:
    data_dir = Path(args.data_dir or os.environ.get("VOICEMIX_DATA_DIR") or DEFAULT_DATA_DIR)
    admin_key = args.admin_key or os.environ.get("VOICEMIX_ADMIN_KEY")
    if admin_key is None:
        try:
            admin_key = json.loads((data_dir / "secrets.json").read_text()).get("admin_key")
        except (OSError, ValueError):
            admin_key = None
    cafile = args.cacert
    if cafile is None and (data_dir / "controller-cert.pem").exists():
        cafile = str(data_dir / "controller-cert.pem")
    return Target(args.url, admin_key, cafile, args.insecure,
                  control_secret=os.environ.get("VOICEMIX_CONTROL_SECRET") or None)


def run(args: argparse.Namespace) -> int:
    target = target_from(args)
    try:
        if args.command == "stats":
            snapshot = target.snapshot()
            if args.json:
                print(json.dumps(snapshot, indent=2, default=str))
            else:
                from rich.console import Console
                Console().print(render(snapshot))
            return 0
        return live(target, args.interval, args.once)
    except TopError as exc:
        print(f"voicemix {args.command}: {exc}", file=sys.stderr)
        return 1


def live(target: Target, interval_s: float, once: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    before = target.snapshot()
    if once:
        time.sleep(min(interval_s, 1.0))
        console.print(render(target.snapshot(), before))
        return 0
    try:
        with Live(render(before), console=console, screen=True, auto_refresh=False) as view:
            while True:
                time.sleep(interval_s)
                try:
                    now = target.snapshot()
                except TopError as exc:  # keep showing the last screen, say why it is stale
                    console.log(f"refresh failed: {exc}")
                    continue
                view.update(render(now, before), refresh=True)
                before = now
    except KeyboardInterrupt:
        return 0
