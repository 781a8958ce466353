from django.core.management.base import BaseCommand, CommandError

from organisations.models import Sector
from organisations.services import user_upsert
from tre.errors import Invalid
from tre.roles import ROLE_ALIASES


class Command(BaseCommand):
    help = "Create or update a tre user (idempotent): password, e-mail, role, organisation."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=False)
        parser.add_argument("--email", help="where notifications are e-mailed")
        parser.add_argument("--role", action="append", default=[],
                            help="dac, output_checker, custodian or auditor (repeatable)")
        parser.add_argument("--organisation", help="created if it does not exist")
        parser.add_argument("--sector", default=Sector.ACADEMIC, choices=Sector.values)
        parser.add_argument("--staff", action="store_true", default=None,
                            help="let the user sign in to the (read-only) admin site")

    def handle(self, *args, username, password, role, organisation, sector, staff=None, email=None, **options):
        bad = [r for r in role if r not in ROLE_ALIASES]
        if bad:
            raise CommandError(f"unknown role {bad[0]!r}: use one of dac, output_checker, custodian, auditor")
        try:
            user, created = user_upsert(username=username, password=password, roles=role,
                                        organisation=organisation, sector=sector, staff=staff, email=email)
        except Invalid as exc:
            raise CommandError(exc.detail) from exc
        roles = ", ".join(sorted(g.name for g in user.groups.all())) or "researcher"
        self.stdout.write(f"{'created' if created else 'updated'} user {username} ({roles})")
