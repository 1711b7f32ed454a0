"""The operators' CIMD trust policy (CIMD-13, ABUSE-04): allowed and blocked domains."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ..flows import clients
from ..models import CIMDDomainRule
from .base import operator


@admin.register(CIMDDomainRule)
class CIMDDomainRuleAdmin(admin.ModelAdmin):
    """Allowed and blocked client_id URL domains; every change goes through the audited flow."""

    list_display = ("domain", "policy", "note", "created_at")
    list_filter = ("policy",)
    search_fields = ("domain",)
    readonly_fields = ("created_at",)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        clients.save_cimd_domain_rule(obj, actor=operator(request), request=request)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        clients.save_cimd_domain_rule(obj, actor=operator(request), delete=True, request=request)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for rule in queryset:
            self.delete_model(request, rule)
