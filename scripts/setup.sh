#!/usr/bin/env bash
# Set up voicemix on a Debian machine: system packages (when missing), a virtualenv in .venv, and the
# compiled core. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# libopus-dev: the Cython core links libopus. pkg-config: finds it. ffmpeg: the interop peer of the
# end-to-end tests. redis-server: the shared call registry's peer in the controller tests.
# coturn: turnutils_* clients and turnserver, the TURN interop peers and benchmark baseline.
# opus-tools: opusinfo, an independent checker of the Ogg Opus files the engine records.
# postgresql: the shared store's server in the controller tests and the store benchmark (the
# tests start their own in a temporary directory; the package's own cluster is not used).
# chromium: the real browser of the WebRTC tests (driven by Playwright with executable_path);
# iproute2: the network namespace those tests put it in (Chromium gathers no loopback candidates).
# python3-venv: only if this Python cannot make a virtualenv by itself.
APT_PACKAGES=(libopus-dev libopus0 pkg-config ffmpeg redis-server coturn postgresql opus-tools chromium iproute2)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
echo "setup: done ($(.venv/bin/voicemix version | sed -n 1p))"
