"""Secrets at rest (issue 18): the data directory is 0700 and every secret file in it 0600, from
creation; an older, wider data directory or secrets file is narrowed at start."""
from __future__ import annotations

import json
import os
import stat

import pytest
import uvloop

from controller.settings import ControllerSettings
from controller.testing import running_controller
from mixer.datadir import write_secret

pytestmark = pytest.mark.store_independent


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_controller_keeps_its_secrets_private(tmp_path):
    data_dir = tmp_path / "fresh" / "voicemix"

    async def scenario():
        async with running_controller(data_dir) as c:
            return c.server.settings

    settings = uvloop.run(scenario())
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "secrets.json") == 0o600
    assert mode(data_dir / "controller-key.pem") == 0o600
    assert mode(data_dir / "outbox") == 0o700
    stored = json.loads((data_dir / "secrets.json").read_text())
    assert stored["admin_key"] == settings.admin_key
    # secrets never show in the settings' repr (a log line or a traceback printing them)
    assert settings.admin_key not in repr(settings) and settings.token_secret not in repr(settings)


def test_an_older_wider_data_directory_is_narrowed(tmp_path):
    data_dir = tmp_path / "old"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    secrets = data_dir / "secrets.json"
    secrets.write_text(json.dumps({"admin_key": "k" * 32}))
    os.chmod(secrets, 0o644)

    async def scenario():
        async with running_controller(data_dir) as c:
            return c.server.settings.admin_key

    assert uvloop.run(scenario()) == "k" * 32
    assert mode(data_dir) == 0o700 and mode(secrets) == 0o600


def test_secret_files_are_0600_from_creation_even_over_a_stale_temporary(tmp_path):
    target = tmp_path / "d" / "key.pem"
    target.parent.mkdir(mode=0o700)
    stale = target.with_name("key.pem.tmp")
    stale.write_text("old")
    os.chmod(stale, 0o666)
    write_secret(target, b"secret")
    assert target.read_bytes() == b"secret" and mode(target) == 0o600
    assert not stale.exists()


def test_a_refused_setting_does_not_echo_its_value(monkeypatch):
    monkeypatch.setenv("VOICEMIX_TOKEN_LEEWAY_S", "hunter2-is-not-a-number")
    with pytest.raises(Exception) as refused:
        ControllerSettings()
    assert "hunter2" not in str(refused.value)
