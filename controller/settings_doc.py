"""Write `docs/configuration.md` from the settings classes, so the page cannot drift from the code.

`python -m controller.settings_doc --write` regenerates the page; `--check` (and
`tests/controller/test_settings_doc.py`) fails when the page differs from what the classes say, or
when a settings class somewhere in the packages is not listed in `SECTIONS`.
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

import annotated_types
from pydantic_settings import BaseSettings

from controller.settings import ControllerSettings
from mixer.logs import LogSettings
from mixer.settings import EngineSettings
from mixer.turn.settings import TurnSettings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# (settings class, heading, who reads it)
SECTIONS: list[tuple[type[BaseSettings], str, str]] = [
    (EngineSettings, "Media engine", "`voicemix engine`, and the engine inside `voicemix serve`"),
    (ControllerSettings, "Signaling controller",
     "`voicemix controller` and `voicemix serve`; also from `--config FILE` (TOML or JSON, the names "
     "below in lower case without the prefix)"),
    (TurnSettings, "STUN/TURN server",
     "`voicemix turn` (`voicemix serve` starts TURN from the controller's `TURN_*` settings above)"),
    (LogSettings, "Logging", "every `voicemix` command"),
]

INTRO = """# Configuration

Every setting of every voicemix process, with its environment variable and default. Defaults run
embedded on loopback with no configuration at all. This page is generated from the settings
classes by `python -m controller.settings_doc --write`; `tests/controller/test_settings_doc.py`
fails when it no longer matches them, so edit the classes (their `Field(description=...)`), not this
page.

Values come from environment variables (pydantic-settings: booleans `true`/`false`, lists and maps
as JSON); command-line flags (`--listen`, `--control`, `--ports`, ...) override them.
"""


def env_name(cls: type[BaseSettings], field: str) -> str:
    return (cls.model_config.get("env_prefix") or "") .upper() + field.upper()


def show_default(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        text = str(value)
        home = str(Path.home())
        return f"`{'~' + text[len(home):] if text.startswith(home) else text}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def show_type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [show_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(parts)
    if origin in (list, dict):
        return "JSON " + ("list" if origin is list else "map")
    return {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def show_range(metadata: list) -> str:
    parts = []
    for item in metadata:
        for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def section(cls: type[BaseSettings], heading: str, readers: str) -> str:
    lines = [f"## {heading}", "",
             f"`{cls.__module__}.{cls.__name__}`, read by {readers}.", "",
             "| variable | default | type | what |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        kind = show_type(field.annotation)
        limits = show_range(field.metadata)
        if limits:
            kind += f" ({limits})"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{env_name(cls, name)}` | {show_default(default)} | {kind} | {description} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    return INTRO + "\n" + "\n".join(section(*item) for item in SECTIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        PAGE.write_text(text)
    elif args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python -m controller.settings_doc --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
