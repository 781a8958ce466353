"""Person sets of groups, their storage, and the differencing check against released groups."""

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap64

from outputs.differencing import find_differencing
from queries.personsets import deserialize_sets, group_person_sets, person_key, serialize_sets

HMAC = "00000000000000ff" + "ab" * 24                      # 64 hex digits, like HMAC-SHA256


def test_person_key_is_the_first_16_hex_digits():
    assert person_key(HMAC) == 255
    assert person_key("FFFFFFFFFFFFFFFF") == 2**64 - 1


@pytest.mark.parametrize("bad", ["", "abc", "0x00000000000000ff", "00000000 000000ff",
                                 "-000000000000001", "0000_00000000000f", "g" * 16])
def test_person_key_refuses_anything_but_hex(bad):
    with pytest.raises(ValueError):
        person_key(bad)


def test_group_person_sets_collects_each_groups_persons():
    pid = [f"{i:016x}" + "0" * 48 for i in range(5)]
    pairs = [("F", 2020, pid[0]), ("F", 2020, pid[1]), ("M", 2020, pid[1]), ("F", 2020, pid[0]),
             ["M", 2021, pid[4]]]
    assert group_person_sets(2, pairs) == {("F", 2020): BitMap64([0, 1]),
                                           ("M", 2020): BitMap64([1]), ("M", 2021): BitMap64([4])}
    assert group_person_sets(0, [(pid[2],), (pid[3],)]) == {(): BitMap64([2, 3])}


def test_person_sets_survive_storage_with_their_keys():
    sets = {("F", date(2020, 1, 1), Decimal("1.50"), None, 3, 2.5, True): BitMap64(range(1000)),
            ("M", datetime(2020, 1, 1, 12, 30), Decimal("0"), "x", -1, 0.0, False):
                BitMap64([2**64 - 1, 2**40, 7]),
            (): BitMap64()}
    assert deserialize_sets(serialize_sets(sets)) == sets
    assert deserialize_sets(serialize_sets({})) == {}


def test_spread_out_person_keys_are_stored_as_plain_uint64s():
    spread = BitMap64(i * 0x9E3779B97F4A7C15 % 2**64 for i in range(1000))
    data = serialize_sets({("a",): spread})
    assert len(data) < 8 * 1000 + 100                       # roaring would take ~22 bytes each
    assert deserialize_sets(data) == {("a",): spread}


def test_damaged_storage_is_refused():
    data = serialize_sets({("a",): BitMap64(range(100))})
    for damaged in (b"junk" + data, data[:-1], data + b"\0"):
        with pytest.raises(ValueError):
            deserialize_sets(damaged)


def sets(**groups):
    return {(name,): BitMap64(persons) for name, persons in groups.items()}


RELEASED = sets(a=range(0, 20), b=range(100, 130), c=range(200, 205))


@pytest.mark.parametrize(("persons", "released_group", "difference"), [
    (range(0, 19), "a", 1),                                 # one person fewer
    (range(0, 21), "a", 1),                                 # one more
    (range(1, 21), "a", 2),                                 # one out, one in
    (range(0, 11), "a", 9),                                 # threshold - 1
    (range(109, 130), "b", 9),                              # nine fewer
    (range(91, 130), "b", 9),                               # only one of its first ten is in b
])
def test_a_group_close_to_a_released_one_is_a_finding(persons, released_group, difference):
    findings = find_differencing(sets(new=persons), [(7, RELEASED)], threshold=10)
    assert findings == [{"group": ("new",), "released_output": 7,
                         "released_group": (released_group,), "difference": difference}]


@pytest.mark.parametrize("persons", [
    range(0, 20),                                           # the same persons: same release
    range(0, 10),                                           # ten fewer
    range(110, 130),                                        # ten fewer again, from the start
    range(200, 210),                                        # within 5 of c, which had 5 persons
    range(300, 320),                                        # nobody in common
])
def test_a_group_ten_or_more_persons_away_or_identical_is_not(persons):
    assert find_differencing(sets(new=persons), [(7, RELEASED)], threshold=10) == []


def test_groups_below_the_threshold_are_not_compared():
    # Both are suppressed whole by the threshold rule: nothing of them is released.
    assert find_differencing(sets(new=range(0, 8)), [(1, sets(old=range(0, 9)))], 10) == []


def test_every_released_output_and_group_is_searched():
    released = [(1, sets(a=range(0, 20))), (2, sets(x=range(50, 70), y=range(0, 18)))]
    findings = find_differencing(sets(p=range(0, 19), q=range(50, 69), r=range(90, 99)),
                                 released, threshold=10)
    assert [(f["group"], f["released_output"], f["released_group"], f["difference"])
            for f in findings] == [(("p",), 1, ("a",), 1), (("p",), 2, ("y",), 1),
                                   (("q",), 2, ("x",), 1)]


person_sets = st.dictionaries(st.integers(0, 30), st.sets(st.integers(0, 60), max_size=40),
                              max_size=8)


@settings(max_examples=200, deadline=None)
@given(person_sets, person_sets, st.integers(1, 12))
def test_findings_are_exactly_the_close_pairs_found_by_comparing_every_pair(new, old, threshold):
    new_sets = {(k,): BitMap64(v) for k, v in new.items()}
    old_sets = {(k,): BitMap64(v) for k, v in old.items()}
    expected = [{"group": (a,), "released_output": 1, "released_group": (b,),
                 "difference": len(new[a] ^ old[b])}
                for a in new for b in old
                if min(len(new[a]), len(old[b])) >= threshold
                and 0 < len(new[a] ^ old[b]) < threshold]
    assert find_differencing(new_sets, [(1, old_sets)], threshold) == expected
