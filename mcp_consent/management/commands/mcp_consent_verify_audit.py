"""Verify the audit trail's hash chain; exit 1 naming the first broken row."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from mcp_consent import audit


class Command(BaseCommand):
    help = "Check the audit trail's hash chain and name the first broken row."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit.verify()
        if report.first_broken is not None:
            event = report.first_broken
            raise CommandError(
                f"audit chain broken at event #{event.pk} ({event.action}, {event.created_at:%Y-%m-%d %H:%M:%S}): "
                f"it {report.problem}; {report.checked} event(s) before it verified"
            )
        self.stdout.write(f"audit chain intact: {report.checked} event(s) verified")
