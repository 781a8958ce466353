"""NHS numbers and the keyed pseudonym that replaces them.

``person_id`` = HMAC-SHA256(``TRE_PSEUDONYM_KEY``, normalised NHS number) as lowercase hex. The
same NHS number gives the same ``person_id`` in every dataset, so datasets join on ``person_id``;
without the key the mapping cannot be recomputed. The key lives only in the settings (the
environment of the process): never in the database, never in a log line.

Nothing in this module logs, and nothing returns a raw NHS number except ``normalise_nhs_number``
(whose caller already holds it) and ``make_nhs_number`` (synthetic numbers for tests, the bench
and the demo).
"""

import hashlib
import hmac
import re
from collections.abc import Iterable

from django.conf import settings

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_SEPARATORS = re.compile(r"[ \t\-]+")  # the same set as the SQL check in ingest.py
_TEN_DIGITS = re.compile(r"[0-9]{10}")


def normalise_nhs_number(s) -> str:
    """``"943 476 5919"`` / ``"943-476-5919"`` → ``"9434765919"``: spaces, tabs and dashes removed.

    Does not validate: see ``is_valid_nhs_number``.
    """
    if s is None:
        return ""
    return _SEPARATORS.sub("", str(s))


def check_digit(first_nine: str) -> int | None:
    """The modulus-11 check digit of nine digits, or None when no digit fits (remainder 1)."""
    total = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def is_valid_nhs_number(s) -> bool:
    """Ten ASCII digits (after normalisation) whose last is the modulus-11 check digit."""
    if not isinstance(s, (str, int)) or isinstance(s, bool):
        return False
    n = normalise_nhs_number(s)
    if not _TEN_DIGITS.fullmatch(n):
        return False
    return check_digit(n[:9]) == int(n[9])


def _key() -> bytes:
    key = settings.TRE_PSEUDONYM_KEY
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def person_id_for(nhs_number) -> str:
    """The keyed pseudonym of a (valid) NHS number. ValueError for an invalid one."""
    n = normalise_nhs_number(nhs_number)
    if not is_valid_nhs_number(n):
        raise ValueError("not a valid NHS number")  # the number itself is never put in the message
    return hmac.new(_key(), n.encode("ascii"), hashlib.sha256).hexdigest()


def person_ids_for(normalised: Iterable[str]) -> list[str]:
    """``person_id`` of many already-normalised, already-validated numbers (fast path for loads)."""
    key = _key()
    digest = hashlib.sha256
    new = hmac.new
    return [new(key, n.encode("ascii"), digest).hexdigest() for n in normalised]


# --- synthetic numbers ----------------------------------------------------------------------

def make_nhs_number(seed: int) -> str:
    """A valid, synthetic NHS number, distinct for each ``seed`` in ``[0, 100_000_000)``.

    The nine leading digits are ``4xxxxxxxx`` (``400_000_000 + seed``); when no check digit fits
    them, ``6xxxxxxxx`` is used instead, which always has one (moving the first digit by two moves
    the weighted sum by 20, never a multiple of 11). The two ranges do not overlap, so distinct
    seeds give distinct numbers.
    """
    if not 0 <= seed < 100_000_000:
        raise ValueError("seed must be in [0, 100000000)")
    for prefix in (400_000_000, 600_000_000):
        nine = str(prefix + seed)
        check = check_digit(nine)
        if check is not None:
            return nine + str(check)
    raise AssertionError("unreachable: one of the two prefixes always has a check digit")
