import time

from django.core.management.base import BaseCommand

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit hash chain; exits non-zero and names the first bad seq when it is invalid."

    def handle(self, *args, **options):
        started = time.monotonic()
        result = verify_chain()
        elapsed = time.monotonic() - started
        if result.valid:
            self.stdout.write(f"audit chain valid: {result.events_checked} events checked in {elapsed:.2f}s")
            return
        self.stderr.write(f"audit chain INVALID at seq {result.first_invalid_seq}: {result.reason} "
                          f"({result.events_checked} events checked)")
        raise SystemExit(1)
