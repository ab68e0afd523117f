"""docs/configuration.md is what the settings classes say, every settings class is on it, and every
setting says what it does."""
from __future__ import annotations

import ast
from pathlib import Path

from controller import settings_doc

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_matches_the_settings_classes():
    assert settings_doc.PAGE.read_text() == settings_doc.render(), (
        "docs/configuration.md is out of date: run `python -m controller.settings_doc --write`")


def test_every_settings_class_is_on_the_page():
    """Found from the source (classes deriving from BaseSettings), so a new one cannot be missed."""
    found = set()
    for path in sorted((ROOT / "mixer").rglob("*.py")) + sorted((ROOT / "controller").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", None)) == "BaseSettings"
                    for base in node.bases):
                found.add(node.name)
    listed = {cls.__name__ for cls, _, _ in settings_doc.SECTIONS}
    assert found == listed, f"settings classes not in controller.settings_doc.SECTIONS: {found - listed}"


def test_every_setting_says_what_it_does():
    undocumented = [f"{cls.__name__}.{name}" for cls, _, _ in settings_doc.SECTIONS
                    for name, field in cls.model_fields.items() if not field.description]
    assert not undocumented, f"give these Field(description=...): {undocumented}"
