"""The leak audit: after a full scenario, nothing a researcher was sent holds raw values of
unreleased outputs, person_ids or NHS numbers; and no NHS number is anywhere in the database or logs."""

import logging
import subprocess

import pytest
from django.db import connection

from outputs.models import Output
from queries.results import read_result
from tests.scenario import Scenario, ok

pytestmark = pytest.mark.django_db(transaction=True)


class Recorder:
    """Wraps API clients so every response a researcher receives is kept."""

    def __init__(self, client_for, researchers):
        self.client_for, self.researchers, self.bodies = client_for, researchers, []

    def __call__(self, user):
        client = self.client_for(user)
        if user.username not in self.researchers:
            return client
        recorder = self

        class Recording(type(client)):
            def generic(self, *args, **kwargs):
                response = super().generic(*args, **kwargs)
                raw = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
                recorder.bodies.append(raw.decode(errors="replace"))
                if getattr(response, "streaming", False):
                    response.streaming_content = [raw]
                return response

        client.__class__ = Recording
        return client


def _distinctive_raw_values(output_ids) -> set[str]:
    """Raw statistic values of unreleased outputs that are specific enough to search for."""
    values = set()
    for output in Output.objects.filter(pk__in=output_ids):
        # the exact grid (keys, statistics, contributors) and the stored cells' exact parts
        statistics = [kind != "key" for kind in output.column_kinds] + [True]
        found = [value for row in output.raw for value, stat in zip(row, statistics, strict=False) if stat]
        _, cells = read_result(output.query_id)
        found += [value for cell in cells for name, value in cell.items() if name not in ("key", "ckey", "ckey2")]
        for value in found:
            if isinstance(value, float) and not value.is_integer():
                values.add(repr(value))
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 1000:
                values.add(str(value))
    return values


def test_nothing_leaks_to_researchers_or_into_storage(client_for, make_user, caplog):
    caplog.set_level(logging.DEBUG)
    recorder = Recorder(client_for, {"lena_lead", "max_member", "olga_outsider"})
    sc = Scenario(recorder, make_user, rows=1500, persons=120)
    sqls = [
        "SELECT region, count(*) AS n, sum(value) AS cost, avg(value) AS mean_cost FROM gp_events GROUP BY region",
        "SELECT age_band, sex, count(DISTINCT person_id) AS people, avg(value) AS mean_cost FROM gp_events GROUP BY age_band, sex",
        "SELECT code, stddev(value) AS sd, variance(value) AS var FROM gp_events GROUP BY code",
    ]
    sc.submit_dummy(sqls[0])  # a dummy run answers in full: over the twin, which holds no real value
    queries = [sc.submit(sql) for sql in sqls]
    outputs = [sc.wait_query(q["id"])["output"] for q in queries]
    # the researcher looks at everything they are allowed to
    member = sc.c(sc.member)
    for output_id in outputs:
        ok(member.get(f"/api/v1/outputs/{output_id}/"))
    ok(member.get("/api/v1/outputs/"))
    ok(member.get(f"/api/v1/projects/{sc.project['id']}/queries/"))
    for q in queries:
        ok(member.get(f"/api/v1/queries/{q['id']}/"))
    # release the first one and download it; the other two stay unreleased
    ok(member.post(f"/api/v1/outputs/{outputs[0]}/request-release/"))
    for checker in sc.checkers:
        ok(sc.c(checker).post(f"/api/v1/outputs/{outputs[0]}/reviews/", {"decision": "approve", "comment": "ok"}, format="json"))
    ok(member.get(f"/api/v1/outputs/{outputs[0]}/download/?file_format=csv"))
    ok(member.get(f"/api/v1/outputs/{outputs[0]}/download/?file_format=json"))
    ok(member.post(f"/api/v1/outputs/{outputs[1]}/request-release/"))
    ok(member.get(f"/api/v1/outputs/{outputs[1]}/"))
    for path in ("/api/v1/me/", "/api/v1/datasets/", f"/api/v1/projects/{sc.project['id']}/", "/api/v1/register/"):
        ok(member.get(path))
    sc.c(sc.outsider).get(f"/api/v1/outputs/{outputs[1]}/")
    # opt-outs happen too
    victims = sorted({r.nhs_number for r in sc.records})[:5]
    ok(sc.c(sc.custodian).post("/api/v1/opt-outs/", {"nhs_numbers": victims}, format="json"), 202)

    sent = "\n".join(recorder.bodies)
    assert len(recorder.bodies) > 15
    nhs_numbers = {r.nhs_number for r in sc.records}
    person_ids = sc.person_ids()
    assert not [n for n in nhs_numbers if n in sent], "an NHS number reached a researcher"
    assert not [p for p in person_ids if p in sent or p[:16] in sent], "a person_id reached a researcher"
    unreleased_raw = _distinctive_raw_values(outputs[1:])
    assert unreleased_raw, "the scenario should produce distinctive raw values to look for"
    assert not [v for v in unreleased_raw if v in sent], "a raw value of an unreleased output reached a researcher"

    # the whole database: a real dump of the test database
    db = connection.settings_dict
    dump = subprocess.run(["pg_dump", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"],
                           "--data-only", db["NAME"]], capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert "gp_events" in dump.stdout  # the dump is the real thing
    assert not [n for n in nhs_numbers if n in dump.stdout], "an NHS number is stored in the database"
    assert not [n for n in nhs_numbers if n in caplog.text], "an NHS number was logged"
