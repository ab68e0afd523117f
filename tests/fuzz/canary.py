"""A target with a planted defect, loaded only with VOICEMIX_FUZZ_CANARY=1: the CI test runs it to
prove that the harness finds a crash, reports it and keeps the input."""
from tests.fuzz.registry import InvariantBroken, target


@target("canary", "planted defect: inputs starting with the byte 0x46 break an invariant")
def canary_target():
    def check(data: bytes) -> None:
        if data[:1] == b"F":
            raise InvariantBroken("the planted defect was found")
    return check
