"""Every controller test runs on both stores: SQLite (the embedded default) and PostgreSQL.

`store_kind` is parametrized per module (so module-scoped controllers, such as the Schemathesis
one, get each store too) and sets `VOICEMIX_DATABASE_URL` for the module; `database_url` gives
each test a fresh PostgreSQL database of its own (as each gets a fresh SQLite file in its
`tmp_path`) and is the URL for tests that want it explicitly. Controllers started by the tests
(`controller.testing.running_controller`, `ControllerThread`) read the variable like a deployed
one. A module whose tests never touch a store says so with
`pytestmark = pytest.mark.store_independent` and runs once.
"""
import itertools

import pytest

STORES = ("sqlite", "postgresql")
_databases = itertools.count(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "store_independent: run once, not once per store")


def pytest_generate_tests(metafunc):
    if "store_kind" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("store_independent") is None:
        metafunc.parametrize("store_kind", STORES, indirect=True, scope="module")


def _database(server, scope: str) -> str:
    return server.create_database(f"voicemix_{scope}_{next(_databases)}")


@pytest.fixture(scope="module", autouse=True)
def store_kind(request):
    kind = getattr(request, "param", "sqlite")
    with pytest.MonkeyPatch.context() as env:
        if kind == "postgresql":
            server = request.getfixturevalue("postgres_server")
            env.setenv("VOICEMIX_DATABASE_URL", _database(server, "module"))
        else:
            env.delenv("VOICEMIX_DATABASE_URL", raising=False)
        yield kind


@pytest.fixture(autouse=True)
def database_url(store_kind, request):
    """This test's own PostgreSQL database URL, or None on SQLite."""
    if store_kind != "postgresql":
        yield None
        return
    url = _database(request.getfixturevalue("postgres_server"), "test")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOICEMIX_DATABASE_URL", url)
        yield url
