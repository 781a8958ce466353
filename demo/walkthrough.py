"""``make demo``: a scripted walk through the whole lifecycle over HTTP against a running tre.

apply → DAC approvals → query → SDC → two checkers → release → download → opt-out → audit
verification. Prints each step and its result; exits non-zero if any step fails.
Run ``make run`` first (it seeds the demo users and data), then ``make demo`` in another terminal.
"""

import argparse
import sys
import time
from datetime import datetime

from demo.flow import DATASET, DEMO_PASSWORD, PEOPLE, Flow, Http, StepFailed

# A grid of three declared variables: some cells are small, so disclosure control has work to do.
SQL = ("SELECT region, age_band, sex, count(DISTINCT person_id) AS people, sum(value) AS total_cost, "
       "avg(value) AS mean_cost FROM gp_events GROUP BY region, age_band, sex")
HOSTILE = "SELECT person_id, value FROM gp_events"


def walkthrough(call, report=print) -> None:
    flow = Flow(call, report=report)
    lead, member, dac, checkers, custodian, auditor = "rita", "sam", ["dina", "dev"], ["olu", "otto"], "cass", "aud"

    report("\n== Safe settings: is everything up?")
    health = flow.step("health check", "GET", "/healthz").body
    report(f"      {health}")

    report("\n== Safe data: the custodian's dataset")
    datasets = flow.step("list datasets", "GET", "/api/v1/datasets/", lead).body["results"]
    dataset = next(d for d in datasets if d["name"] == DATASET)
    report(f"      '{dataset['name']}': version {dataset['current_version']}, about {dataset['row_count']:,} rows (perturbed, two significant figures)")

    report("\n== Safe projects: apply, and the DAC decides")
    project = flow.project(lead, member, dac, dataset["id"], f"Diabetes care costs by region ({datetime.now():%H:%M:%S})")

    report("\n== Safe people: only members may query; the language refuses row-level output")
    refused = flow.step("an outsider (the auditor) tries to query", "POST", f"/api/v1/projects/{project['id']}/queries/", auditor,
                        {"sql": SQL}, expect=(403, 404)).body
    report(f"      refused: {refused}")
    rejected = flow.step("member tries a row-level query", "POST", f"/api/v1/projects/{project['id']}/queries/", member,
                         {"sql": HOSTILE}, expect=(400,)).body
    report(f"      rejected: {rejected['sql'][0]}")

    report("\n== Safe settings: the query runs inside the environment; rows never come back")
    query = flow.query(member, project["id"], SQL)

    report("\n== Safe outputs: automatic SDC, then two independent checkers")
    output = flow.release(member, checkers, query["output"])
    assert output["status"] == "released", output
    csv_answer = flow.step("member downloads the released table (CSV)", "GET",
                           f"/api/v1/outputs/{query['output']}/download/?file_format=csv", member)
    text = csv_answer.raw.decode()
    for line in text.splitlines()[:14]:
        report(f"      | {line}")
    flow.step("member downloads it as JSON too", "GET", f"/api/v1/outputs/{query['output']}/download/?file_format=json", member)

    report("\n== Safe data: a patient opts out; it applies at once")
    count_sql = "SELECT count(DISTINCT person_id) AS people FROM gp_events"
    from environment.pseudonym import make_nhs_number  # noqa: PLC0415 — the only Django-free helper the walk needs

    before = flow.query(member, project["id"], count_sql)
    answer = flow.step("custodian registers an opt-out (only its keyed hash is kept)", "POST", "/api/v1/opt-outs/", custodian,
                       {"nhs_numbers": [make_nhs_number(3)]}, expect=(202,)).body
    report(f"      {answer}")
    status = flow.step("opt-out status", "GET", "/api/v1/opt-outs/status/", custodian).body
    report(f"      {status}")
    after = flow.query(member, project["id"], count_sql)
    report(f"      query {before['id']} before and {after['id']} after the opt-out both ran; the second excludes that person")

    report("\n== Transparency: the public register")
    register = flow.step("anyone reads the register", "GET", "/api/v1/register/").body
    report(f"      {register['count']} project(s) listed; e.g. '{register['results'][0]['title']}' "
           f"({register['results'][0]['organisation']}, {register['results'][0]['status']})")

    report("\n== Audit: who did what, and is the record intact?")
    events = flow.step("auditor lists this project's events", "GET", f"/api/v1/audit/events/?project={project['id']}", auditor).body
    report(f"      {events['count']} events, e.g. " + ", ".join(e["action"] for e in events["results"][:6]))
    verify = flow.step("auditor verifies the hash chain", "GET", "/api/v1/audit/verify/", auditor).body
    report(f"      {verify}")
    if not verify["valid"]:
        raise StepFailed("the audit chain did not verify")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"tre demo against {args.base_url}")
    try:
        walkthrough(Http(args.base_url, {p.username: DEMO_PASSWORD for p in PEOPLE}))
    except StepFailed as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"\nDEMO FAILED: cannot reach {args.base_url} ({exc}). Is `make run` running?", file=sys.stderr)
        return 1
    print(f"\nThe whole lifecycle worked, in {time.monotonic() - started:.1f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
