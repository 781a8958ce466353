"""Dataset counts (DESIGN §4): exact for custodians; perturbed by the cell key method over the
version's persons and rounded to two significant figures for everyone else."""

import pytest

from environment.models import DatasetVersion
from environment.recordkeys import record_keys
from outputs.disclosure import perturb_dataset_count
from tests.scenario import Scenario, ok

pytestmark = pytest.mark.django_db(transaction=True)


def test_counts_are_exact_for_custodians_and_perturbed_for_everyone_else(client_for, make_user):
    sc = Scenario(client_for, make_user, rows=400, persons=60)
    dataset_id = sc.dataset["id"]
    exact = ok(sc.c(sc.custodian).get(f"/api/v1/datasets/{dataset_id}/"))
    assert (exact["row_count"], exact["person_count"]) == (400, 60)
    persons = sc.person_ids()
    ckey = sum(record_keys(p)[0] for p in persons) % 256
    expected = (perturb_dataset_count(400, ckey), perturb_dataset_count(60, ckey))
    for user in (sc.lead, sc.member, sc.outsider, sc.auditor, sc.dac[0]):
        shown = ok(sc.c(user).get(f"/api/v1/datasets/{dataset_id}/"))
        assert (shown["row_count"], shown["person_count"]) == expected, user.username
        listed = next(d for d in ok(sc.c(user).get("/api/v1/datasets/"))["results"] if d["id"] == dataset_id)
        assert (listed["row_count"], listed["person_count"]) == expected
    assert DatasetVersion.objects.get(pk=exact["current_version"]).person_ckey == ckey  # computed once, kept
    # version lists, with their exact counts, are for custodians only
    assert sc.c(sc.lead).get(f"/api/v1/datasets/{dataset_id}/versions/").status_code == 403


def test_the_perturbed_count_is_rounded_to_two_significant_figures():
    for count in (0, 7, 12, 399, 400, 1234, 98765):
        for ckey in (0, 17, 200, 255):
            shown = perturb_dataset_count(count, ckey)
            digits = str(shown).rstrip("0")
            assert shown >= 0 and len(digits) <= 2, (count, ckey, shown)
