"""The layers of docs/architecture.md hold: every module imports only from its own layer or below.

Read from the source (the `import` statements, not what happens to be loaded), so a violation is
found even in a module no test imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Package prefix -> rank; a module may import modules of equal or lower rank only. The longest
# matching prefix decides. Siblings of one rank that must not know each other are listed below.
RANKS = {
    "mixer._": 0,            # the compiled core (no I/O, no asyncio)
    "mixer.settings": 0,
    "mixer.ratelimit": 0,    # token buckets and failure cool-downs: the one limiter implementation
    "mixer.datadir": 0,      # the data directory (0700) and secret files in it (0600)
    "mixer.certificates": 0,  # self-signed certificates and fingerprints (controller, engine control)
    "mixer.metrics": 0,      # fixed-bucket histograms, retired counters (no I/O)
    "mixer.logs": 0,         # log formats and redaction
    "mixer.codec": 1,
    "mixer.timestretch": 1,  # DSP on decoded audio
    "mixer.playout": 1,      # jitter buffer + decoder + time stretching of one stream
    "mixer.rtp": 1,          # protocol objects
    "mixer.sdp": 1,
    "mixer.turn.stun": 1,
    "mixer.turn.errors": 1,
    "mixer.turn._wire": 1,
    "mixer.turn.peers": 1,   # which addresses a relay or a fork may send to (no I/O)
    "mixer.legs": 2,         # one participant's media on one port, used by every mode
    "mixer.media": 3,        # engine-side media services (players, recordings, forks): no peer
    "mixer.voice": 3,        # per-talker voice processing in the MCU decode path (no I/O)
    "mixer.mcu": 4,          # conference modes
    "mixer.sfu": 4,
    "mixer.relay": 4.5,      # relays a 1:1 call, mixes (through mixer.mcu) when it must
    "mixer.engine": 5,       # the process: registry of conferences, clock, control API
    "mixer.turn": 5,         # STUN/TURN service beside the engine
}
SIBLINGS = [("mixer.mcu", "mixer.sfu")]
# Tools that drive the product from outside (test clients, demo, load generator): product code
# never imports them.
TOOLS = ("mixer.sim", "mixer.demo", "mixer.load", "mixer.selfcheck", "mixer.analysis", "mixer.cli",
         "controller.testing", "controller.settings_doc")  # settings_doc: writes docs/configuration.md
# The controller talks to engines only through the engine client interface; it does no media work.
CONTROLLER_MAY_IMPORT = ("mixer.engine.client",
                         "mixer.metrics", "mixer.logs",  # the shared metrics and log formats
                         # the shared limiter, secret files and certificates (issue 18)
                         "mixer.ratelimit", "mixer.datadir", "mixer.certificates")
# `voicemix serve` composes a controller, an engine and TURN in one process: the one module of the
# controller that may build them.
CONTROLLER_COMPOSITION = {"controller.serve": ("mixer.engine.engine", "mixer.settings", "mixer.turn",
                                              "mixer.engine.cli", "mixer.engine.metrics")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the project modules `path` imports (`from mixer import _rtp` counts as
    `mixer._rtp`)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("mixer", "controller")}


def rank(module: str) -> int | None:
    if module == "mixer":  # the package's own __init__
        return 0
    best = None
    for prefix, value in RANKS.items():
        if module == prefix or module.startswith(prefix if prefix.endswith("_") else prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, value)
    return best[1] if best else None


def is_tool(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TOOLS)


def product_modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_mixer_layers_only_look_down():
    violations = []
    for path in product_modules("mixer") + sorted((ROOT / "mixer").rglob("*.pyx")):
        module = module_name(path)
        if is_tool(module):
            continue
        own = rank(module)
        assert own is not None, f"{module} has no layer in RANKS: give it one"
        for imported in imports_of(path) if path.suffix == ".py" else set():
            if imported.startswith("controller"):
                violations.append(f"{module} imports {imported} (the controller is above the engine)")
            elif is_tool(imported):
                violations.append(f"{module} imports the tool {imported}")
            elif (theirs := rank(imported)) is not None and theirs > own:
                violations.append(f"{module} (layer {own}) imports {imported} (layer {theirs})")
            for a, b in SIBLINGS:
                for mine, other in ((a, b), (b, a)):
                    if module.startswith(mine) and imported.startswith(other):
                        violations.append(f"{module} imports its sibling {imported}")
    assert not violations, "\n".join(violations)


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_controller_uses_the_engine_only_through_its_client_interface():
    violations = []
    for path in product_modules("controller"):
        module = module_name(path)
        if is_tool(module):
            continue
        allowed = CONTROLLER_MAY_IMPORT + CONTROLLER_COMPOSITION.get(module, ())
        for imported in imports_of(path):
            if imported.startswith("mixer") and not _within(imported, allowed):
                violations.append(f"{module} imports {imported}")
    assert not violations, "\n".join(violations)


def test_product_code_never_imports_the_test_clients():
    offenders = [f"{module_name(p)} imports {name}"
                 for package in ("mixer", "controller") for p in product_modules(package)
                 if not is_tool(module_name(p))
                 for name in imports_of(p) if name.startswith("mixer.sim")]
    assert not offenders, "\n".join(offenders)


# The controller's own layers: the SIP stack knows nothing of calls; the call logic knows nothing
# of SIP (the PSTN side plugs into it); the PSTN side builds on both; the app and the servers
# assemble everything. The longest matching prefix decides; anything not listed is call logic.
CONTROLLER_RANKS = {
    "controller.sip": 0,      # RFC 3261 stack: messages, transports, transactions, dialogs
    "controller": 1,          # call logic: calls, registry, events, store, engine clients, CDRs
    "controller.pstn": 2,     # numbers, B2BUA legs, IVR, screening, trunk
    "controller.app": 3,      # the REST API and the processes that assemble the controller
    "controller.server": 3,
    "controller.serve": 3,
    "controller.cli": 3,
    "controller.testing": 4,  # test helpers
}


def controller_rank(module: str) -> int:
    best = ("", 1)
    for prefix, value in CONTROLLER_RANKS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[0]):
            best = (prefix, value)
    return best[1]


def test_controller_layers_only_look_down():
    violations = []
    for path in product_modules("controller"):
        module = module_name(path)
        own = controller_rank(module)
        for imported in imports_of(path):
            if not imported.startswith("controller"):
                continue
            target = imported
            # `from controller.sip import uri` names a module; `from controller import cdr` too
            theirs = controller_rank(target)
            if theirs > own:
                violations.append(f"{module} (layer {own}) imports {imported} (layer {theirs})")
        if own == 0 and any(i.startswith("controller") and not i.startswith("controller.sip")
                            for i in imports_of(path)):
            violations.append(f"{module} is the SIP stack and imports other controller modules")
    assert not violations, "\n".join(violations)
