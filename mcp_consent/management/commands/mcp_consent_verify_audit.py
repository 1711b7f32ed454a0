"""Verify the audit trail's keyed hash chains; exit 1 naming the first broken row (SEC-06)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mcp_consent import audit


class Command(BaseCommand):
    help = (
        "Check the audit trail's keyed hash chains and name the first broken row. "
        "--anchor prints a value to keep outside the database; --expect-anchor checks "
        "that the chains still hold what they held when it was printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor",
            action="store_true",
            help="print only the anchor of the verified chains (store it off this machine)",
        )
        parser.add_argument(
            "--expect-anchor",
            metavar="ANCHOR",
            help="also verify that the chains extend the state this anchor was taken at",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        expect = None
        if options["expect_anchor"]:
            try:
                expect = audit.Anchor.parse(options["expect_anchor"])
            except audit.AnchorError as exc:
                raise CommandError(str(exc)) from None
        report = audit.verify(expect)
        if report.first_broken is not None:
            event = report.first_broken
            raise CommandError(
                f"audit chain {report.chain} broken at event #{event.pk} ({event.action}, "
                f"{event.created_at:%Y-%m-%d %H:%M:%S}): it {report.problem}; "
                f"{report.checked} event(s) before it verified"
            )
        if not report.intact:
            raise CommandError(f"audit trail does not verify: {report.problem}")
        if options["anchor"]:
            self.stdout.write(str(report.anchor))
            return
        legacy = (
            f" ({report.legacy} unkeyed event(s) from before the keyed chain)"
            if report.legacy
            else ""
        )
        matched = " and match the anchor" if expect is not None else ""
        self.stdout.write(
            f"audit chain intact: {report.checked} event(s) verified{matched}{legacy}"
        )
