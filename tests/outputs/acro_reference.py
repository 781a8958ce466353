"""ACRO's threshold, (n, k) dominance and p% definitions over the values of one cell (ACRO 1.0.2:
acro/sdcchecks.py), restated so the disclosure tests can compare with them without pulling in
ACRO's dependencies (pandas, statsmodels, scipy, matplotlib)."""


def acro_threshold(values, threshold):
    return len(values) < threshold                              # check_min_threshold


def acro_nk(values, n, k):
    total = sum(values)                                         # check_nk_dominance: NaN >= k
    return total != 0 and sum(sorted(values, reverse=True)[:n]) / total >= k   # is False


def acro_p_percent(values, p):
    top = sorted(values, reverse=True)                          # check_ppercent_dominance
    sub_total = sum(values) - sum(top[:2])
    p_val = sub_total if top[0] == 0 else sub_total / top[0]
    return p_val < p


SHARED_CASES = [                                               # (values, rules fired in ACRO)
    ([10] * 10, []),
    ([10] * 9, ["threshold"]),
    ([1000] + [1] * 11, ["nk_dominance", "p_percent"]),
    ([50, 40] + [1] * 10, ["nk_dominance"]),                   # exactly k = 0.9
    ([50, 39] + [1] * 11, []),                                 # 0.89
    ([500, 450] + [5] * 10, ["nk_dominance"]),                 # p: 50 / 500 = 0.1, not below
    ([500, 450] + [5] * 9 + [4], ["nk_dominance", "p_percent"]),   # p: 49 / 500
    ([0] * 12, ["p_percent"]),                                 # zeros are disclosive
    ([0] * 11 + [7], ["nk_dominance", "p_percent"]),
]
