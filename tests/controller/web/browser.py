"""Real Chromium for the WebRTC tests: Debian's `chromium` driven by Playwright, inside a network
namespace of the test's own.

Chromium gathers no loopback candidates, so a browser on the host's loopback cannot reach an
engine on 127.0.0.1. Each run makes a namespace with a veth pair on the test range 198.18.k.0/24
(RFC 2544 benchmarking space): the host side (.1) carries the controller, the engine's media
address and TURN; the browser runs in the namespace (.2) through a wrapper script given to
Playwright as `executable_path`. Its offers carry mDNS `.local` host candidates, as in the field:
the engine learns the browser's address from its ICE checks.

Needs root (to make the namespace) and /usr/bin/chromium. Without them the browser tests are
skipped, except under CI=true, where tests/conftest.py fails them: CI must run them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required",
                 "--disable-gpu"]


def require_browser() -> None:
    """Skip (fail under CI=true) when Chromium, Playwright or root is missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if os.geteuid() != 0:
        missing.append("root (the test makes a network namespace)")
    if shutil.which("ip") is None:
        missing.append("ip (apt-get install iproute2)")
    if missing:  # (tests/conftest.py turns this skip into a failure under CI=true)
        pytest.skip("browser tests need " + ", ".join(missing))


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class BrowserNetwork:
    """A network namespace joined to the host by a veth pair: host `host_ip`, browser side
    `browser_ip`; `executable` runs Chromium inside it."""

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.subnet = 1 + os.getpid() % 250
        self.namespace = f"vmx{tag}"
        self.host_if, self.ns_if = f"vmx{tag}h", f"vmx{tag}n"
        self.host_ip = f"198.18.{self.subnet}.1"
        self.browser_ip = f"198.18.{self.subnet}.2"
        self._dir = tempfile.TemporaryDirectory(prefix="vmx-browser-")
        self.executable = str(Path(self._dir.name) / "chromium-in-namespace")

    def __enter__(self) -> BrowserNetwork:
        self.close(quiet=True)  # a previous run killed before its cleanup
        ns = ("netns", "exec", self.namespace, "ip")
        _ip("netns", "add", self.namespace)
        try:
            # IPv4 only: an IPv6 link-local address appearing a moment after Chromium starts is a
            # "network change" that aborts its first navigation (ERR_NETWORK_CHANGED)
            subprocess.run(["ip", "netns", "exec", self.namespace, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                           check=False, capture_output=True)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            Path(f"/proc/sys/net/ipv6/conf/{self.host_if}/disable_ipv6").write_text("1")
            _ip("link", "set", self.ns_if, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip(*ns, "addr", "add", f"{self.browser_ip}/24", "dev", self.ns_if)
            _ip(*ns, "link", "set", self.ns_if, "up")
            _ip(*ns, "link", "set", "lo", "up")
            # Chromium lists no network (and gathers no candidates) without a default route
            _ip(*ns, "route", "add", "default", "via", self.host_ip)
            self._wait_for_carrier()
        except (subprocess.CalledProcessError, OSError):
            self.close(quiet=True)
            raise
        Path(self.executable).write_text(
            f"#!/bin/sh\nexec ip netns exec {self.namespace} {CHROMIUM} \"$@\"\n")
        os.chmod(self.executable, 0o755)
        return self

    def _wait_for_carrier(self, timeout_s: float = 5.0) -> None:
        """Both ends up before the browser starts: a link coming up under it is a network change."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = subprocess.run(["ip", "netns", "exec", self.namespace, "cat",
                                    f"/sys/class/net/{self.ns_if}/operstate"],
                                   capture_output=True, text=True).stdout.strip()
            if state == "up":
                return
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, quiet: bool = False) -> None:
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.namespace, check=False)
        if not quiet:
            self._dir.cleanup()


@contextlib.contextmanager
def browser_network() -> Iterator[BrowserNetwork]:
    require_browser()
    with BrowserNetwork() as network:
        yield network


# In-page instrumentation (test code, injected with page.evaluate; not shipped in the page):
# every remote track the library plays gets an AnalyserNode, sampled every 20 ms for the tone
# frequencies asked; window.__heard holds [time ms, path, mid, {freq: dB}] rows.
LISTEN_JS = """
(freqs) => {
  window.__heard = window.__heard || [];
  const context = new AudioContext();
  context.resume();
  const watch = (entry) => {
    const source = context.createMediaStreamSource(entry.stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 4096;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const hz = context.sampleRate / analyser.fftSize;
    const timer = setInterval(() => {
      if (entry.track.readyState === "ended") { clearInterval(timer); return; }
      analyser.getFloatFrequencyData(bins);
      const levels = {};
      for (const f of freqs) {
        const i = Math.round(f / hz);
        levels[f] = Math.max(bins[i - 1], bins[i], bins[i + 1]);
      }
      window.__heard.push([performance.now(), entry.path, entry.mid, levels]);
    }, 20);
  };
  const hook = (call) => {
    for (const entry of call.remote) watch(entry);
    call.on("track", watch);
  };
  window.__hook = hook;
  return true;
}
"""

# What the browser's own WebRTC statistics say about received audio.
INBOUND_STATS_JS = """
async (which) => {
  const call = window.voicemixApp.call;
  const pc = which === "direct" ? call.direct : call.engine;
  const report = await pc.getStats();
  const out = [];
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.push({mid: s.mid, packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
                totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples,
                audioLevel: s.audioLevel, jitter: s.jitter, codecId: s.codecId});
    }
  });
  return out;
}
"""


def tone_frames(rows: list, freq: float, threshold_db: float = -60.0, path: str | None = None,
                mid: str | None = None) -> list[float]:
    """Times (ms, page clock) of analyser samples in which `freq` stood above `threshold_db`."""
    return [t for t, p, m, levels in rows if (path is None or p == path) and (mid is None or m == mid)
            and levels.get(str(int(freq)), levels.get(str(freq), -200)) > threshold_db]


def longest_gap_ms(times: list[float], start: float, end: float) -> float:
    inside = sorted(t for t in times if start <= t <= end)
    if not inside:
        return end - start
    edges = [start, *inside, end]
    return max(b - a for a, b in zip(edges, edges[1:]))
