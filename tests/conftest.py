"""Fixtures shared by the test packages: a real PostgreSQL server for the whole session."""
import pytest

from controller.testing import PostgresServer, postgres_bin_dir, require_or_skip


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server (Debian's `postgresql` package) on loopback in a temporary
    directory for the session; tests make their own databases in it (`create_database`)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        require_or_skip("PostgreSQL (Debian package postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server
