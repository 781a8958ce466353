"""Properties of the validator over generated queries (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queries.sql import QueryRejected, validate_and_rewrite

SCHEMA = {"patients": {"person_id": "text", "region": "text", "sex": "text", "birth_date": "date",
                       "weight": "float", "smoker": "boolean"}}

# Expressions that are not aggregates: allowed in the output only as GROUP BY keys.
PLAIN = ["region", "sex", "weight", "smoker", "birth_date", "lower(region)", "weight + 1", "weight * 2",
         "CASE WHEN weight > 70 THEN 'heavy' ELSE 'light' END", "extract(year FROM birth_date)",
         "coalesce(region, sex)", "NOT smoker", "1", "'constant'"]
AGGREGATES = ["count(*)", "count(weight)", "count(DISTINCT sex)", "count(DISTINCT person_id)", "sum(weight)",
              "avg(weight)", "median(weight)", "stddev(weight)", "variance(weight)"]
# Never allowed in the output.
COMPUTED = ["sum(weight) + 1", "count(*) * 2", "avg(weight) - avg(weight)", "round(avg(weight))",
            "CASE WHEN count(*) > 5 THEN region END", "coalesce(sum(weight), 0)"]
GROUPABLE = [p for p in PLAIN if p not in ("1", "'constant'")]  # literals in GROUP BY mean positions or errors


@st.composite
def selects(draw):
    """(sql, items, group) with items as (text, category) in SELECT order and group as the grouped texts."""
    plain = draw(st.lists(st.sampled_from(PLAIN), max_size=3))
    aggregates = draw(st.lists(st.sampled_from(AGGREGATES), max_size=3))
    computed = draw(st.lists(st.sampled_from(COMPUTED), max_size=1))
    items = draw(st.permutations([(p, "plain") for p in plain] + [(a, "aggregate") for a in aggregates]
                                 + [(c, "computed") for c in computed]))
    if not items:
        items = [("count(*)", "aggregate")]
    group = draw(st.lists(st.sampled_from(GROUPABLE), max_size=3, unique=True))
    aliases = {}
    parts = []
    for n, (text, _) in enumerate(items, start=1):
        if draw(st.booleans()):
            aliases[text] = f"c{n}"
            parts.append(f"{text} AS c{n}")
        else:
            parts.append(text)
    group_by = []
    for g in group:  # the same key by expression, by SELECT position or by alias
        way = draw(st.sampled_from(["expression", "position", "alias"]))
        position = next((n for n, (text, _) in enumerate(items, start=1) if text == g), None)
        if way == "position" and position:
            group_by.append(str(position))
        elif way == "alias" and g in aliases:
            group_by.append(aliases[g])
        else:
            group_by.append(g)
    sql = f"SELECT {', '.join(parts)} FROM patients"
    if group_by:
        sql += " GROUP BY " + ", ".join(group_by)
    return sql, items, group


@settings(max_examples=400, deadline=None)
@given(query=selects())
def test_output_is_only_group_keys_and_single_aggregates(query):
    sql, items, group = query
    row_level = [text for text, category in items if category == "plain" and text not in group]
    acceptable = (not row_level and not any(category == "computed" for _, category in items)
                  and all(any(text == g for text, _ in items) for g in group)
                  and any(category == "aggregate" for _, category in items))
    try:
        validated = validate_and_rewrite(sql, schema=SCHEMA)
    except QueryRejected as rejected:
        assert not acceptable, f"{sql} rejected: {rejected}"
        if row_level and not any(c == "computed" for _, c in items):
            assert rejected.rule == "row_level_output", f"{sql}: {rejected}"
        return
    assert acceptable, f"{sql} was accepted"
    kinds = [c.kind for c in validated.columns]
    assert [k == "key" for k in kinds] == [category == "plain" for _, category in items]


PERSON_PLACES = [
    "SELECT {p}, count(*) FROM patients GROUP BY 1",
    "SELECT count(*) FROM patients WHERE {p} IS NOT NULL",
    "SELECT count(*) FROM patients GROUP BY {p}",
    "SELECT sex, count(*) FROM patients GROUP BY sex HAVING count({p}) > 1",
    "SELECT sum(length({p})) FROM patients",
    "SELECT count({p}) FROM patients",
    "SELECT count(DISTINCT {p} || 'x') FROM patients",
]
PERSON_WRAPPERS = ["{p}", "lower({p})", "coalesce({p}, '')", "CASE WHEN {p} > 'a' THEN 1 END", "left({p}, 2)",
                   "({p})", "CAST({p} AS text)"]


@settings(max_examples=200, deadline=None)
@given(place=st.sampled_from(PERSON_PLACES), wrapper=st.sampled_from(PERSON_WRAPPERS),
       spelling=st.sampled_from(["person_id", "PERSON_ID", "patients.person_id", '"person_id"', "Person_Id"]))
def test_person_id_outside_count_distinct_is_always_rejected(place, wrapper, spelling):
    sql = place.format(p=wrapper.format(p=spelling))
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite(sql, schema=SCHEMA)
    assert caught.value.rule == "person_id_use", f"{sql}: {caught.value}"
