"""The cell key method's functions (outputs/cellkey.py) on hand-computed values."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outputs import ptable
from outputs.cellkey import (
    ROWS,
    SUM,
    SUMSQ,
    MagnitudeParams,
    avg,
    cell_key,
    cell_key2,
    multiplier,
    perturb_frequency,
    perturb_magnitude,
    perturb_rows,
    record_keys,
    round_significant,
    row_key,
    stddev,
    uniform,
    variance,
)

TABLE = ptable.get()


def test_frequency_looks_up_the_row_and_the_key_range_of_the_stored_table():
    # Row 13 (and every larger value): keys 0-9 -> -3, 10-37 -> -2, 38-92 -> -1, 93-161 -> 0 …
    assert [perturb_frequency(13, k, TABLE) for k in (0, 9, 10, 37, 38, 92, 93, 161, 162, 255)] == \
        [10, 10, 11, 11, 12, 12, 13, 13, 14, 16]
    assert perturb_frequency(1000, 0, TABLE) == 997 and perturb_frequency(1000, 255, TABLE) == 1003
    assert perturb_frequency(0, 200, TABLE) == 0                     # empty stays empty
    assert perturb_frequency(10, 255, TABLE) == 10                   # exactly the threshold: kept
    # Row 1: keys 0-231 -> 0 (withheld), 232-243 -> 10, 244-251 -> 11, 252-255 -> 12
    assert [perturb_frequency(1, k, TABLE) for k in (0, 231, 232, 243, 244, 252)] == [0, 0, 10, 10, 11, 12]


def test_frequency_refuses_impossible_inputs():
    with pytest.raises(ValueError):
        perturb_frequency(-1, 0, TABLE)
    with pytest.raises(ValueError):
        perturb_frequency(5, 256, TABLE)


def test_cell_keys_are_sums_of_record_keys():
    assert cell_key([200, 100, 3]) == 47
    assert cell_key([]) == 0
    assert cell_key2([2**32 - 1, 2]) == 1


def test_record_and_row_keys_are_keyed_and_stable():
    a = record_keys("ab" * 32, b"secret")
    assert a == record_keys("ab" * 32, b"secret")
    assert a != record_keys("ab" * 32, b"other secret")
    assert 0 <= a[0] < 256 and 0 <= a[1] < 2**32
    assert row_key("p", b"2024-01-01|42", b"s") == row_key("p", b"2024-01-01|42", b"s")
    assert row_key("p", b"2024-01-01|42", b"s") != row_key("p", b"2024-01-02|42", b"s")


def test_uniforms_of_different_parts_are_unrelated():
    draws = [(uniform(k, SUM), uniform(k, SUMSQ), uniform(k, ROWS)) for k in range(0, 2**32, 2**20)]
    for i in range(3):
        column = [d[i] for d in draws]
        assert all(0 <= u < 1 for u in column)
        assert abs(sum(column) / len(column) - 0.5) < 0.03
    xs, ys = [d[0] for d in draws], [d[1] for d in draws]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / len(xs)
    assert abs(cov / (1 / 12)) < 0.1


@given(st.integers(0, 2**32 - 1), st.sampled_from([ROWS, SUM, SUMSQ]))
def test_the_multiplier_is_bounded_away_from_zero(ckey2, part):
    m = multiplier(ckey2, part)
    assert 0.5 <= abs(m) <= 2.5
    assert m == multiplier(ckey2, part)


def test_magnitude_noise_scales_with_the_largest_contribution_and_follows_the_sign_of_the_total():
    ckey2 = 123456789
    m = multiplier(ckey2, SUM)
    assert perturb_magnitude(1000.0, 200.0, ckey2) == pytest.approx(1000 + 200 * m)
    assert perturb_magnitude(-1000.0, 200.0, ckey2) == pytest.approx(-(1000 + 200 * m))  # sum(-x)
    assert perturb_magnitude(2000.0, 400.0, ckey2) == pytest.approx(2 * (1000 + 200 * m))  # sum(2 * x)
    assert perturb_magnitude(0.0, 0.0, ckey2) == 0.0           # all contributions zero
    wider = MagnitudeParams(1.0, 3.0)
    assert abs(perturb_magnitude(1000.0, 200.0, ckey2, SUM, wider) - 1000) >= 200


def test_row_counts_are_rounded_and_never_negative():
    for ckey2 in range(0, 2**32, 2**27):
        released = perturb_rows(12, 6, ckey2)
        assert isinstance(released, int) and released >= 0
        assert abs(released - 12) <= round(2.5 * 6)
    assert perturb_rows(0, 0, 5) == 0


def test_derived_statistics_from_perturbed_parts_and_their_guards():
    assert avg(100.0, 8) == 12.5
    assert avg(None, 8) is None and avg(100.0, None) is None and avg(100.0, 0) is None
    assert variance(30.0, 500.0, 3) == pytest.approx((500 - 300) / 2)
    assert variance(30.0, 200.0, 3) == 0.0                    # negative after perturbation -> 0
    assert variance(30.0, 500.0, 1) is None and variance(None, 500.0, 3) is None
    assert stddev(30.0, 500.0, 3) == pytest.approx(math.sqrt(100))
    assert stddev(30.0, 500.0, None) is None


@pytest.mark.parametrize(("value", "rounded"), [(0, 0), (7, 7), (10, 10), (94, 94), (95, 95), (123, 120),
                                                (125, 130), (9_949, 9_900), (9_950, 10_000), (1_234_567, 1_200_000)])
def test_round_to_two_significant_figures(value, rounded):
    assert round_significant(value) == rounded
