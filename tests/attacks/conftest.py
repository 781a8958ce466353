import pytest

from tests.attacks import harness
from tests.attacks.harness import Environment


@pytest.fixture(scope="session")
def env() -> Environment:
    yield harness.environment()
    harness.close()
