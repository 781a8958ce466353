import hashlib
import hmac

from environment.recordkeys import record_keys, record_keys_many


def test_record_keys_are_the_first_five_bytes_of_the_keyed_hash():
    pid = "a" * 64
    d = hmac.new(b"secret", pid.encode(), hashlib.sha256).digest()
    assert record_keys(pid, secret="secret") == (d[0], int.from_bytes(d[1:5], "big"))
    rk, rk2 = record_keys_many([pid, "b" * 64], secret=b"secret")
    assert (rk[0], rk2[0]) == record_keys(pid, secret="secret")
    assert 0 <= rk[1] <= 255 and 0 <= rk2[1] < 2**32
    assert record_keys(pid, secret="other") != record_keys(pid, secret="secret")


def test_the_secret_comes_from_the_settings(settings):
    settings.TRE_CELLKEY_SECRET = "from-settings"
    assert record_keys("c" * 64) == record_keys("c" * 64, secret="from-settings")
