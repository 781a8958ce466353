"""The differencing check: cells of a new output whose contributors differ from a released cell's
by 1 … threshold−1 persons (DESIGN.md §6). Pure: person-key sets in, findings out."""

from __future__ import annotations

from collections.abc import Iterable

from pyroaring import BitMap64


def find_differencing(new_sets: dict[tuple, BitMap64],
                      released: Iterable[tuple[int, dict[tuple, BitMap64]]],
                      threshold: int, *, min_size: int | None = None) -> list[dict]:
    """Pairs (new cell, released cell) whose person sets differ by 1 … threshold-1 persons.

    Only cells of at least ``min_size`` persons are compared (default: the threshold; with
    perturbation, pass threshold − D: an exact count below the threshold may be released above it).
    Two sets within threshold-1 of each other share at least one of any ``threshold`` persons of
    either, so each new cell is only compared with released cells holding one of its first
    ``threshold`` persons and of a size within threshold-1 of its own.
    """
    floor = threshold if min_size is None else max(1, min_size)
    new = [(key, bm) for key, bm in new_sets.items() if len(bm) >= floor]
    old = [(output_id, key, bm) for output_id, sets in released
           for key, bm in sets.items() if len(bm) >= floor]
    if threshold < 2 or not new or not old:
        return []
    sampled: dict[int, list[int]] = {}
    for a, (_, bm) in enumerate(new):
        for person in bm[:threshold]:
            sampled.setdefault(person, []).append(a)
    probe = BitMap64(sampled)
    findings = []
    candidates = sorted({(a, j) for j, (_, _, bm) in enumerate(old) for person in bm & probe
                         for a in sampled[person] if abs(len(new[a][1]) - len(bm)) < threshold})
    for a, j in candidates:
        (key, bm), (output_id, old_key, old_bm) = new[a], old[j]
        difference = bm.symmetric_difference_cardinality(old_bm)
        if 0 < difference < threshold:
            findings.append({"group": key, "released_output": output_id,
                             "released_group": old_key, "difference": difference})
    return findings
