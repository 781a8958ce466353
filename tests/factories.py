import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from environment.declaration import declare
from environment.models import Dataset
from environment.pseudonym import make_nhs_number
from organisations.models import Organisation, Sector, UserProfile
from tre.roles import ROLE_ALIASES

PASSWORD = "correct-horse-battery"


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Organisation {n}")
    sector = Sector.ACADEMIC


class UserFactory(factory.django.DjangoModelFactory):
    """``UserFactory(role="dac", organisation=org_or_name)``; password is ``PASSWORD``."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)

    @classmethod
    def _create(cls, model_class, *args, role=None, organisation=None, **kwargs):
        user = super()._create(model_class, *args, **kwargs)
        if role:
            for r in [role] if isinstance(role, str) else role:
                user.groups.add(Group.objects.get_or_create(name=ROLE_ALIASES[r].value)[0])
        org = organisation
        if isinstance(org, str):
            org = OrganisationFactory(name=org)
        profile, _ = UserProfile.objects.get_or_create(user=user)
        if org is not None and profile.organisation_id != org.pk:
            profile.organisation = org
            profile.save()
        return user


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"dataset_{n}")
    title = factory.LazyAttribute(lambda o: o.name.replace("_", " ").title())
    description = "A synthetic dataset for tests."
    identifier_column = "nhs_number"
    columns = factory.LazyFunction(lambda: [
        {"name": "nhs_number", "type": "text"},
        {"name": "region", "type": "text"},
        {"name": "age", "type": "integer"},
        {"name": "value", "type": "float"},
    ])
    # the version-1 declaration's dictionary (version 1, not yet complete: no load derived it)
    dictionary = factory.LazyAttribute(lambda o: declare(
        {"name": o.name, "identifier_column": o.identifier_column, "columns": o.columns}, check_name=False)[0].to_json())


# --- Governance: projects and agreements -------------------------------------------------

import datetime as _dt  # noqa: E402
from unittest import mock  # noqa: E402

from django.utils import timezone as _tz  # noqa: E402

from access.models import Agreement  # noqa: E402
from projects.models import Project  # noqa: E402


def _today():
    return _tz.localdate()


class AgreementFactory(factory.django.DjangoModelFactory):
    """``AgreementFactory(organisation=org, datasets=[ds], status="active")``: written directly
    (no audit); the services are tested on their own."""

    class Meta:
        model = Agreement
        skip_postgeneration_save = True

    organisation = factory.SubFactory(OrganisationFactory)
    title = factory.Sequence(lambda n: f"Agreement {n}")
    reference = factory.Sequence(lambda n: f"DSA-{n:04d}")
    permitted_purposes = factory.LazyFunction(lambda: ["health research"])
    prohibited_uses = factory.LazyFunction(lambda: ["marketing", "insurance"])
    commercial_use_allowed = False
    valid_from = factory.LazyFunction(lambda: _today() - _dt.timedelta(days=365))
    valid_until = factory.LazyFunction(lambda: _today() + _dt.timedelta(days=365))
    status = Agreement.Status.ACTIVE
    activated_at = factory.LazyAttribute(lambda o: _tz.now() if o.status != Agreement.Status.DRAFT else None)
    revoked_at = factory.LazyAttribute(lambda o: _tz.now() if o.status == Agreement.Status.REVOKED else None)

    @factory.post_generation
    def datasets(self, create, extracted, **kwargs):
        if create and extracted:
            self.datasets.set(extracted)


class ProjectFactory(factory.django.DjangoModelFactory):
    """A project made through the services (so memberships, guardian grants and audit events are
    real): ``ProjectFactory(lead=u, members=[m], datasets=[ds], status="approved")``. Statuses
    past ``submitted`` are reached with votes of fresh DAC members of their own organisation.

    The DAC's agreement rule (no approve vote while ``agreement_gaps`` is non-empty) is waived
    here, so a test sets up exactly the agreements it is about, before or after the project; the
    rule itself is tested through the service in tests/projects/test_dac.py."""

    class Meta:
        model = Project

    title = factory.Sequence(lambda n: f"Project {n}")
    lay_summary = "What we want to find out, in plain words."
    purpose = "To measure something useful."
    purpose_categories = factory.LazyFunction(lambda: ["health_research"])
    public_benefit = "Better care."
    legal_basis = "GDPR 6(1)(e) and 9(2)(j)"
    commercial = False
    start_date = factory.LazyFunction(lambda: _today() - _dt.timedelta(days=30))
    end_date = factory.LazyFunction(lambda: _today() + _dt.timedelta(days=365))
    ethics_reference = "REC 24/AB/0001"
    lead = factory.SubFactory(UserFactory)

    @classmethod
    def _create(cls, model_class, *args, lead, datasets=None, members=(), status="draft", **kwargs):
        from django.conf import settings

        from projects import services

        if datasets is None:
            datasets = [DatasetFactory()]
        project = services.project_create(actor=lead, data={**kwargs, "datasets": [d.pk for d in datasets]})
        for member in members:
            services.project_member_add(project=project, actor=lead, username=member.username)
        if status == "draft":
            return project
        services.project_submit(project=project, actor=lead)
        if status in ("returned", "rejected"):
            dac = UserFactory(role="dac", organisation=OrganisationFactory())
            decision = "return" if status == "returned" else "reject"
            services.project_review(project=project, actor=dac, decision=decision, comment="see comments")
        elif status in ("approved", "suspended", "closed"):
            with mock.patch.object(services, "approval_gaps", return_value=[]):
                for _ in range(settings.TRE_DAC_APPROVALS):
                    dac = UserFactory(role="dac", organisation=OrganisationFactory())
                    services.project_review(project=project, actor=dac, decision="approve", comment="fine")
            if status == "suspended":
                services.project_suspend(project=project, actor=UserFactory(role="dac"), reason="paused")
            elif status == "closed":
                services.project_close(project=project, actor=lead, reason="done")
        elif status != "submitted":
            raise ValueError(f"ProjectFactory cannot reach status {status!r}")
        project.refresh_from_db()
        return project


# --- Outputs: a completed query's output, made without the worker ---------------------------

def count_cell(key, persons: int, *, ckey: int | None = None, rows: int | None = None) -> dict:
    """A populated cell of a count-only grid as the contributions statement gives it."""
    rows = persons if rows is None else rows
    return {"key": list(key), "n_persons": persons, "ckey": (ckey if ckey is not None else persons * 37) % 256,
            "ckey2": persons * 7919, "n_rows": rows, "rows_max": 1 if rows == persons else rows}


def count_plan(key="region", domain=("east", "north", "south"), statistic="n", kind="count_persons") -> dict:
    """A stored plan (``queries.plans.plan_json``) of one key and one count."""
    return {"datasets": [], "keys": [{"name": key, "kind": "category", "domain": list(domain)}],
            "statistics": [{"name": statistic, "kind": kind, "measure": None}], "one_row_per_person": True,
            "grid_size": len(domain)}


# region/n: "east" (4 persons) is under the threshold and withheld; north and south are released.
DEFAULT_PLAN = count_plan()
DEFAULT_CELLS = [count_cell(["north"], 23), count_cell(["south"], 12), count_cell(["east"], 4)]


class CompletedQueryFactory(factory.django.DjangoModelFactory):
    """A completed real ``Query`` row whose cells (and person sets) are written to the store with
    ``queries.results``, as the worker would leave them — but no output yet.

    ``CompletedQueryFactory(project=p, plan={...}, cells=[...], person_sets={(key,): [ints]})``."""

    class Meta:
        model = "queries.Query"

    title = factory.Sequence(lambda n: f"Query {n}")
    sql = "SELECT region, count(DISTINCT person_id) AS n FROM dataset GROUP BY region"
    contributions_sql = "/* contributions */ SELECT k0, count(*) AS n_persons …"
    contributors_sql = "/* contributors */ SELECT DISTINCT k0, pid …"
    status = "completed"

    @classmethod
    def _create(cls, model_class, *args, project=None, submitted_by=None, plan=None, cells=None,
                person_sets=None, datasets=None, started_at=None, finished_at=None, **kwargs):
        from pyroaring import BitMap64

        from queries import plans, results
        from queries.personsets import serialize_sets

        if project is None:
            project = ProjectFactory(status="approved")
        submitted_by = submitted_by or project.lead
        plan = dict(plan or DEFAULT_PLAN)
        cells = DEFAULT_CELLS if cells is None else cells
        if datasets is None:
            datasets = sorted(project.datasets.values_list("name", flat=True))
        now = _tz.now()
        query = model_class.objects.create(
            project=project, submitted_by=submitted_by, plan=plan, dataset_names=[d.lower() for d in datasets],
            started_at=started_at or now, finished_at=finished_at or now, result_groups=len(cells), **kwargs)
        results.write_result(query.pk, plans.columns(plan), cells)
        if person_sets is not None:
            results.write_person_sets(query.pk, serialize_sets({tuple(k): BitMap64(v) for k, v in person_sets.items()}))
        return query


class OutputFactory(factory.django.DjangoModelFactory):
    """An output made by ``outputs.services.output_create_for_query`` from a
    ``CompletedQueryFactory`` query (keyword arguments go to it), then driven through the services
    to ``status``: pending (default), submitted, released (fresh checkers approve), rejected,
    returned, withdrawn."""

    class Meta:
        model = "outputs.Output"

    @classmethod
    def _create(cls, model_class, *args, status="pending", **kwargs):
        from django.conf import settings

        from outputs import services

        query = CompletedQueryFactory(**kwargs)
        output = services.output_create_for_query(query=query)
        if status == "pending":
            return output
        member = query.submitted_by
        if status == "withdrawn":
            return services.output_withdraw(output=output, actor=member)
        output = services.output_request_release(output=output, actor=member)
        if status == "submitted":
            return output
        decisions = {"released": ["approve"] * settings.TRE_OUTPUT_APPROVALS, "rejected": ["reject"],
                     "returned": ["return"]}
        if status not in decisions:
            raise ValueError(f"OutputFactory cannot reach status {status!r}")
        for decision in decisions[status]:
            output = services.output_review(output=output, actor=UserFactory(role="output_checker"),
                                            decision=decision, comment=f"{decision}: checked")
        output.refresh_from_db()
        return output


def load_dataset_rows(dataset, rows, *, actor=None):
    """Load ``rows`` (dicts keyed by the dataset's declared column names; the identifier a valid NHS
    number, e.g. ``environment.pseudonym.make_nhs_number(i)``) into ``dataset`` now, through the real
    upload and ingestion services. Returns the ``DatasetVersion`` (``ready``, or ``failed`` with
    ``errors``); works with ``db`` and ``transactional_db``."""
    import csv
    import hashlib
    import io
    import secrets

    from environment import services, store

    out = io.StringIO()
    names = [c["name"] for c in dataset.columns]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for r in rows:
        writer.writerow(["" if r.get(n) is None else r.get(n) for n in names])
    content = out.getvalue().encode("utf-8")
    path = store.incoming_dir() / f"{secrets.token_hex(16)}.upload"
    path.write_bytes(content)
    version = services.version_upload(dataset=dataset, actor=actor, incoming_path=path, size=len(content),
                                      sha256=hashlib.sha256(content).hexdigest(), filename="rows.csv")
    services.version_ingest(version_id=version.pk)
    version.refresh_from_db()
    return version


def make_invalid_nhs_number(seed: int) -> str:
    """Ten digits that fail the check digit (a test's bad input)."""
    valid = make_nhs_number(seed)
    return valid[:9] + str((int(valid[9]) + 1) % 10)
