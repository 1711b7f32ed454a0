"""What every mcp_consent admin page shares: read-only records, the reason page of the
revoking actions, and lists that cost the same at a million rows as at a hundred (issue 11).

A changelist at scale (PostgreSQL, 100,000 clients, 1,000,000 consents, tokens and audit
events) runs the same statements as with a hundred rows because:

* filters on a client or a user are a text box (``InputFilter``), never one link per row of
  another table;
* the paginator counts at most ``COUNT_CAP`` rows and, past that, shows PostgreSQL's planner
  estimate (``EstimatedCountPaginator``) — no ``COUNT(*)`` of a million-row table, and no
  second full count (``show_full_result_count = False``) or facet counts;
* the date hierarchy is drawn from the calendar between the first and the last date (one
  ``MIN``/``MAX`` over an index) instead of ``SELECT DISTINCT`` over every row;
* every default ordering has an index (migration 0004).
"""

from __future__ import annotations

import calendar
import datetime
import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.text import capfirst

from .. import audit

# How many rows a changelist counts exactly before it shows an estimate instead.
COUNT_CAP = 10_000
# How many selected objects the reason page lists by name (all of them stay selected).
CONFIRM_SHOWN = 100


def operator(request: HttpRequest) -> audit.ActorInfo:
    return audit.actor_from(request, operator=True)


def redirect_host(uri: str) -> str:
    """The host a redirect URI sends codes to (with a port when it has one): what tells two
    clients of the same name apart (CD-09, CD-10)."""
    parts = urlsplit(uri)
    if parts.netloc:
        return parts.netloc
    return f"{parts.scheme}:" if parts.scheme else uri  # a private-use scheme has no host


class ReadOnlyMixin:
    """Recorded data: no add, no change of recorded fields, no raw delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EstimatedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP`` rows; past that, the planner's estimate on PostgreSQL.

    ``SELECT COUNT(*)`` of a million-row table is a full scan (a parallel sequential scan on
    PostgreSQL); the operator reading page 1 has no use for the exact figure. The bounded
    count reads at most ``COUNT_CAP + 1`` rows. On PostgreSQL the estimate is asked for every
    time (EXPLAIN plans, it does not execute), so a list runs the same statements at every
    size (issue 11).
    """

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        # values("pk"): the annotations of the page (correlated counts) stay out of it.
        bounded = queryset.values("pk").order_by()[: COUNT_CAP + 1].count()
        estimate = self._planner_estimate(queryset)
        if bounded <= COUNT_CAP:
            return bounded
        self.estimated = True
        return max(estimate or 0, bounded)

    @staticmethod
    def _planner_estimate(queryset: QuerySet) -> int | None:
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        sql, params = queryset.order_by().query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


class CalendarChangeList(ChangeList):
    """Django's ChangeList with a date hierarchy that does not read every row.

    Django's ``date_hierarchy`` lists the years (months, days) that have rows with
    ``SELECT DISTINCT`` over the whole filtered table; here the choices come from the
    calendar between the first and the last date (one MIN/MAX on an indexed column).
    A month with no row is a link to an empty page, never a scan.
    """

    @cached_property
    def calendar(self) -> dict[str, Any]:
        """The date hierarchy's context for the level shown: a day, a month, a year or all."""
        field = self.date_hierarchy
        year_key, month_key, day_key = (f"{field}__{part}" for part in ("year", "month", "day"))
        year = self.params.get(year_key)
        month = self.params.get(month_key)
        day = self.params.get(day_key)
        if day and month and year:
            shown = datetime.date(int(year), int(month), int(day))
            return {
                "show": True,
                "back": {
                    "link": self._date_link({year_key: year, month_key: month}),
                    "title": capfirst(formats.date_format(shown, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(shown, "MONTH_DAY_FORMAT"))}],
            }
        if month and year:
            return self._days_of(year_key, month_key, day_key, year, month)
        if year:
            return self._months_of(year_key, month_key, year)
        return self._years(year_key)

    def _date_link(self, params: dict[str, Any]) -> str:
        return self.get_query_string(params, [f"{self.date_hierarchy}__"])

    def _days_of(
        self, year_key: str, month_key: str, day_key: str, year: str, month: str
    ) -> dict[str, Any]:
        """Every day of the month, from the calendar (no query)."""
        return {
            "show": True,
            "back": {"link": self._date_link({year_key: year}), "title": str(year)},
            "choices": [
                {
                    "link": self._date_link({year_key: year, month_key: month, day_key: d}),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(int(year), int(month), d), "MONTH_DAY_FORMAT"
                        )
                    ),
                }
                for d in range(1, calendar.monthrange(int(year), int(month))[1] + 1)
            ],
        }

    def _months_of(self, year_key: str, month_key: str, year: str) -> dict[str, Any]:
        """Every month of the year, from the calendar (no query)."""
        return {
            "show": True,
            "back": {"link": self._date_link({}), "title": "All dates"},
            "choices": [
                {
                    "link": self._date_link({year_key: year, month_key: m}),
                    "title": capfirst(
                        formats.date_format(datetime.date(int(year), m, 1), "YEAR_MONTH_FORMAT")
                    ),
                }
                for m in range(1, 13)
            ],
        }

    def _years(self, year_key: str) -> dict[str, Any]:
        """The years from the first row's to the last's: one MIN/MAX on an indexed column."""
        field = self.date_hierarchy
        bounds = self.queryset.aggregate(first=Min(field), last=Max(field))
        first, last = bounds["first"], bounds["last"]
        if first is None or last is None:
            return {"show": False}
        if timezone.is_aware(first):
            first, last = timezone.localtime(first), timezone.localtime(last)
        return {
            "show": True,
            "back": None,
            "choices": [
                {"link": self._date_link({year_key: str(y)}), "title": str(y)}
                for y in range(first.year, last.year + 1)
            ],
        }


class ScaleMixin:
    """The changelist settings that keep a list's cost independent of the table's size."""

    paginator: type[Paginator] = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    change_list_template: Any = "admin/mcp_consent/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CalendarChangeList

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # Readable at 1280 px (issue 9 item 4): the list gets the app sidebar's width.
        context = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)  # type: ignore[misc]


class InputFilter(admin.SimpleListFilter):
    """A text box instead of one link per row of another table (a client, a user).

    Django's related-field filter renders every client and every user: at 100,000 clients
    that page was 12 MB and 100,000 queries (issue 11). The box submits one exact value,
    keeping the other filters of the page.
    """

    template = "admin/mcp_consent/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def selected_label(self, value: str) -> str:
        """What the filter shows about the chosen value (one query at most)."""
        return value

    def choices(self, changelist: ChangeList) -> Iterator[Any]:  # type: ignore[override]
        value = self.value()
        kept = [
            (key, item)
            for key, values in changelist.filter_params.items()
            if key not in {self.parameter_name, PAGE_VAR}
            for item in (values if isinstance(values, list) else [values])
        ]
        yield {
            "parameter": self.parameter_name,
            "value": value or "",
            "placeholder": self.placeholder,
            "kept": kept,
            "selected_label": self.selected_label(value) if value else "",
            "reset": changelist.get_query_string(remove=[str(self.parameter_name)]),
        }


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"size": 60}))


def confirm_with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    title: str,
    action: str,
    headers: list[str],
    describe: Any,
) -> tuple[TemplateResponse | None, str]:
    """The page asking for the reason of a revoking action; (None, reason) once submitted.

    It names each selected object by what tells it apart (``describe`` gives the cells under
    ``headers``: client_id, redirect host, user), so the operator revokes what they meant to.
    With "select all" across pages the page lists the first ``CONFIRM_SHOWN`` and carries the
    selection itself, not one hidden field per row.
    """
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        return None, form.cleaned_data["reason"]
    select_across = request.POST.get("select_across") == "1"
    shown = list(queryset[: CONFIRM_SHOWN + 1])
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "headers": headers,
        "rows": [describe(obj) for obj in shown[:CONFIRM_SHOWN]],
        "more": len(shown) > CONFIRM_SHOWN,
        "select_across": select_across,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "form": form,
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/mcp_consent/confirm_with_reason.html", context), ""


def without_delete_selected(actions: dict[str, Any]) -> dict[str, Any]:
    """Django's bulk delete bypasses the cascade and the audit trail."""
    actions.pop("delete_selected", None)
    return actions


def hosts_of(uris: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(redirect_host(u) for u in uris if u))
