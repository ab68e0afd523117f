"""Suite-wide rules.

Honest CI: with `CI=true` a test that skips because something it needs is missing (ffmpeg, coturn,
redis-server, postgresql, chromium, sipp, ... all installed by `scripts/setup.sh`) fails instead, so a
CI machine without a peer cannot pass with the tests that need it unrun. A skip that is about the
machine itself (no IPv6 loopback, say) and not about what setup.sh installs starts its reason with
"environment:" and stays a skip. The README's test command prints every skip with its reason (-rs).
"""
from __future__ import annotations

import os

import pytest

ENVIRONMENT_SKIP = "environment:"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if ENVIRONMENT_SKIP in reason:
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI, where everything the tests need is installed by "
                       f"scripts/setup.sh: {reason}")


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server (Debian's `postgresql` package) on loopback in a temporary
    directory for the session; tests make their own databases in it (`create_database`)."""
    from controller.testing import PostgresServer, postgres_bin_dir

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server
