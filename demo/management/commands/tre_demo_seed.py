"""Seed the embedded default with a complete demo (idempotent): people for every role, two
organisations, a synthetic pseudonymised dataset, an active agreement, an approved project with a
member and one released output. Prints how to log in."""

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo.data import records, to_csv
from demo.flow import DATASET, DEMO_PASSWORD, PEOPLE, Flow, InProcess
from organisations.services import fresh_token, user_upsert
from projects.models import Project

DEMO_TITLE = "Long-term conditions by region (demo)"
DEMO_SQL = ("SELECT region, age_band, count(DISTINCT person_id) AS people, avg(value) AS mean_cost "
            "FROM gp_events WHERE code IN ('E11', 'I10') GROUP BY region, age_band")


class Command(BaseCommand):
    help = "Seed the demo (idempotent) and print the demo users, passwords and tokens."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=100_000, help="rows of synthetic GP events (default 100,000)")
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, rows, quiet, **options):
        say = (lambda *a: None) if quiet else self.stdout.write
        for p in PEOPLE:
            user_upsert(username=p.username, password=DEMO_PASSWORD, roles=[p.role] if p.role else [],
                        organisation=p.organisation, sector=p.sector)
        if not Project.objects.filter(title=DEMO_TITLE).exists():
            started = time.monotonic()
            say(f"Seeding the demo: {rows:,} synthetic rows, governance, one released output …")
            flow = Flow(InProcess(), report=say)
            lead, member, dac, checkers, custodian = "rita", "sam", ["dina", "dev"], ["olu", "otto"], "cass"
            dataset = flow.dataset(custodian, to_csv(records(rows, persons=max(1, rows // 5))), name=DATASET)
            org_id = get_user_model().objects.get(username=lead).profile.organisation_id
            flow.agreement(custodian, org_id, dataset["id"])
            project = flow.project(lead, member, dac, dataset["id"], DEMO_TITLE)
            query = flow.query(member, project["id"], DEMO_SQL)
            flow.release(member, checkers, query["output"])
            say(f"Seeded in {time.monotonic() - started:.1f}s.")
        self._print_people(say)

    def _print_people(self, say):
        User = get_user_model()
        say("")
        say(f"Demo users (password for all: {DEMO_PASSWORD}):")
        say(f"  {'username':<8} {'role':<28} {'organisation':<32} token")
        for p in PEOPLE:
            token = fresh_token(User.objects.get(username=p.username))  # an expired one is useless to print
            say(f"  {p.username:<8} {p.does:<28} {p.organisation:<32} {token.key}")
        say("")
        say("Try:  curl -H 'Authorization: Token <token>' http://127.0.0.1:8000/api/v1/me/")
        say("      curl http://127.0.0.1:8000/api/v1/register/        (public)")
        say("      make demo                                          (a scripted walk through the whole lifecycle)")
