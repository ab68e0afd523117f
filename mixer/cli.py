"""The `voicemix` command line: one entry point, a subcommand per service or tool."""
from __future__ import annotations

import argparse
import importlib
import sys

from mixer import __version__

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
SUBCOMMANDS = {
    "engine": ("mixer.engine.cli", "run one media engine with its HTTP control API"),
    "demo": ("mixer.demo", "a real group call on loopback; prints what each participant heard"),
    "turn": ("mixer.turn.cli", "run the STUN binding service and the TURN server (TCP/UDP to UDP)"),
    "selfcheck": ("mixer.selfcheck", "encode, protect, jitter and mix a call's worth of audio in-process"),
    "controller": ("controller.cli", "run the signaling controller (HTTPS REST) in front of engines"),
    "serve": ("controller.serve", "controller + media engine + STUN/TURN in one process"),
    "load": ("mixer.load", "many real RTP clients against an engine, bounded; prints loss and tick lateness"),
    "top": ("controller.top", "live view of an engine or a controller: load, conferences, legs, quality"),
    "stats": ("controller.top", "one snapshot of an engine or a controller (--json for scripts)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicemix", description="Real-time voice media tier: RTP/SRTP, Opus/G.711, MCU and SFU."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version and the linked libraries")
    for name, (module, summary) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        command.set_defaults(module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def _version() -> int:
    import numpy
    import pylibsrtp

    from mixer import _mix, _opus

    print(f"voicemix {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, pylibsrtp {pylibsrtp.__version__}, "
          f"{_opus.libopus_version()}, mix kernel {_mix.mix_kernel_path()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "version":
        return _version()
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    sys.exit(main())
