import pytest

from tests.attacks.harness import Environment, environment


@pytest.fixture(scope="session")
def env() -> Environment:
    return environment()
