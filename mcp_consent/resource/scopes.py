"""Scope arithmetic at the resource server: the scope hierarchy (SM-05), missing scopes."""

from __future__ import annotations

from collections.abc import Iterable

from ..app_settings import app_settings


def effective_scopes(granted: Iterable[str]) -> set[str]:
    """SM-05: the granted scopes and everything they imply (transitively)."""
    implies = app_settings.SCOPE_IMPLIES
    result: set[str] = set()
    pending = list(granted)
    while pending:
        scope = pending.pop()
        if scope not in result:
            result.add(scope)
            pending.extend(implies.get(scope, []))
    return result


def missing_scopes(granted: Iterable[str], required: Iterable[str]) -> list[str]:
    have = effective_scopes(granted)
    return [s for s in dict.fromkeys(required) if s not in have]
