import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """UserFactory hashes a password for every user; Argon2 costs ~0.3 s each, which these tests
    (dozens of users per test) cannot afford. Logging in still works with the MD5 hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
