"""The audit trail: read-only, no delete, exported as CSV that no spreadsheet executes."""

from __future__ import annotations

import csv
import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.html import format_html

from ..models import AuditEvent
from .base import ReadOnlyMixin, ScaleMixin, without_delete_selected

# SEC-07 (OWASP "CSV Injection"): a cell starting with one of these is a formula in Excel,
# LibreOffice and Google Sheets. The trail holds attacker-chosen text (a User-Agent, a
# self-registered client's name in the details), so every such cell gets a leading "'".
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text (SEC-07); numbers and None unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_FIELDS = [
    "id",
    "created_at",
    "action",
    "actor_type",
    "actor_user_id",
    "actor_label",
    "subject_user_id",
    "client_id",
    "consent_id",
    "ip_address",
    "user_agent",
    "details",
    "previous_hash",
    "hash",
]


def csv_row(event: AuditEvent) -> list[Any]:
    """One event as CSV cells; the details as JSON text, never Python's repr."""
    cells = [
        event.pk,
        *(getattr(event, f) for f in CSV_FIELDS[1:11]),
        json.dumps(event.details, sort_keys=True, default=str),
        event.previous_hash,
        event.hash,
    ]
    return [spreadsheet_safe(str(c)) if isinstance(c, str) else c for c in cells]


@admin.register(AuditEvent)
class AuditEventAdmin(ScaleMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "action",
        "actor",
        "client",
        "consent",
        "ip_address",
    )
    list_filter = ("action", "actor_type", "created_at")
    search_fields = ("=client_id", "=actor_label", "=ip_address")
    search_help_text = "An exact client_id, actor or IP address."
    date_hierarchy = "created_at"
    readonly_fields = CSV_FIELDS[1:]
    actions = ["export_csv"]

    @admin.display(description="actor", ordering="actor_type")
    def actor(self, obj: AuditEvent) -> str:
        if obj.actor_label and obj.actor_label != obj.actor_type:
            return f"{obj.get_actor_type_display()}: {obj.actor_label}"
        return obj.get_actor_type_display()

    @admin.display(description="client", ordering="client_id")
    def client(self, obj: AuditEvent) -> str:
        # client_ids can be long URLs (CIMD): the cell wraps instead of widening the table.
        return format_html('<span class="mcp-wrap">{}</span>', obj.client_id)

    @admin.display(description="consent", ordering="consent_id")
    def consent(self, obj: AuditEvent) -> Any:
        return obj.consent_id

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return without_delete_selected(super().get_actions(request))

    @admin.action(description="Export selected events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        writer = csv.writer(_Echo())

        def rows():  # type: ignore[no-untyped-def]
            yield writer.writerow(CSV_FIELDS)
            for event in queryset.order_by("pk").iterator():
                yield writer.writerow(csv_row(event))

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="mcp-consent-audit.csv"'
        return response
