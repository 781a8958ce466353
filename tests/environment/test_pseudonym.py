import hashlib
import hmac

import pytest
from django.conf import settings

from environment.pseudonym import (
    check_digit,
    is_valid_nhs_number,
    make_nhs_number,
    normalise_nhs_number,
    person_id_for,
)
from tests.factories import make_invalid_nhs_number


def test_known_numbers():
    # published examples of valid NHS numbers (modulus 11)
    assert is_valid_nhs_number("9434765919")
    assert is_valid_nhs_number("943 476 5919") and is_valid_nhs_number("943-476-5919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("943476591")  # nine digits
    assert not is_valid_nhs_number("94347659190")  # eleven
    assert not is_valid_nhs_number("94347659l9")  # a letter
    assert not is_valid_nhs_number("９４３４７６５９１９")  # full-width digits are not ASCII digits
    assert not is_valid_nhs_number(None) and not is_valid_nhs_number(True) and not is_valid_nhs_number([])


def test_check_digit_ten_is_invalid():
    # 10 digits whose weighted sum leaves remainder 1 have no valid check digit
    nine = next(f"{n:09d}" for n in range(400000000, 400000100) if check_digit(f"{n:09d}") is None)
    assert all(not is_valid_nhs_number(nine + str(d)) for d in range(10))


def test_make_nhs_number_is_valid_and_distinct():
    numbers = [make_nhs_number(i) for i in range(20_000)]
    assert all(is_valid_nhs_number(n) and len(n) == 10 for n in numbers)
    assert len(set(numbers)) == len(numbers)
    assert not any(is_valid_nhs_number(make_invalid_nhs_number(i)) for i in range(2000))
    with pytest.raises(ValueError):
        make_nhs_number(-1)


def test_person_id_is_keyed_hmac_of_the_normalised_number():
    n = make_nhs_number(42)
    expected = hmac.new(settings.TRE_PSEUDONYM_KEY.encode(), n.encode(), hashlib.sha256).hexdigest()
    assert person_id_for(n) == expected == person_id_for(f"{n[:3]} {n[3:6]} {n[6:]}") == person_id_for(int(n))
    assert len(expected) == 64 and expected == expected.lower()
    assert normalise_nhs_number(" 943-476 5919 ") == "9434765919"


def test_person_id_depends_on_the_key(settings):
    n = make_nhs_number(7)
    before = person_id_for(n)
    settings.TRE_PSEUDONYM_KEY = "another-key-another-key-another-key"
    assert person_id_for(n) != before


def test_invalid_number_has_no_person_id_and_is_not_in_the_message():
    bad = make_invalid_nhs_number(3)
    with pytest.raises(ValueError) as info:
        person_id_for(bad)
    assert bad not in str(info.value)
