"""Schemathesis against the controller's own /openapi.json over HTTPS: generated requests for
every operation, as a user and as the admin, must never get a 5xx, and every error must be in the
shared shape. The controller runs its SIP side with no trunk configured, so a PSTN participant
gets the honest 503 `no_trunk` (a configuration the operator has not made, not a failure)."""
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from controller.testing import ControllerThread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    with ControllerThread(tmp_path_factory.mktemp("fuzz"), sip_listen="127.0.0.1:0") as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(controller):
    document = requests.get(f"{controller.url}/openapi.json", verify=controller.cert_path, timeout=10)
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(document.json())


schema = schemathesis.pytest.from_fixture("api_schema")


def check(case, token: str, controller) -> None:
    if case.path.endswith("/events"):
        return  # a stream: covered by the call lifecycle test
    response = case.call(base_url=controller.url, verify=controller.cert_path, timeout=10,
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500 or (
        response.status_code == 503 and response.json()["error"]["code"] == "no_trunk"), (
        response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ
def test_as_a_user_no_5xx_and_shared_error_shape(case, controller):
    check(case, controller.user_token, controller)


@schema.parametrize()
@FUZZ
def test_as_the_admin_no_5xx_and_shared_error_shape(case, controller):
    check(case, controller.admin_key, controller)
