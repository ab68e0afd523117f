"""Fixtures shared by the test packages: a real PostgreSQL server for the whole session."""
import os

import pytest

from controller.testing import PostgresServer, postgres_bin_dir


def require_or_skip(what: str) -> None:
    """Skip for a missing system package, except in CI (`CI=true`), where it fails: a suite that
    silently skips its database half there would prove nothing."""
    message = f"{what} is not installed"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}, and CI must run these tests (scripts/setup.sh installs it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server (Debian's `postgresql` package) on loopback in a temporary
    directory for the session; tests make their own databases in it (`create_database`)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        require_or_skip("PostgreSQL (Debian package postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server
