"""mcp_consent.integrations.sessions: Django's database sessions in fewer statements (issue 11),
never at the price of someone else's session."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from mcp_consent.integrations import sessions
from mcp_consent.integrations.sessions import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as a request runs


def statements(ctx: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0].upper() for q in ctx.captured_queries]


def test_the_demo_stores_sessions_with_it() -> None:
    assert settings.SESSION_ENGINE == "mcp_consent.integrations.sessions"


def test_a_new_session_is_one_insert() -> None:
    """Django's db backend: a free-key check, BEGIN, INSERT, COMMIT."""
    store = SessionStore()
    store["who"] = "octocat"
    with CaptureQueriesContext(connection) as ctx:
        store.save()
    assert statements(ctx) == ["INSERT"]
    assert SessionStore(store.session_key).load() == {"who": "octocat"}


def drawing(monkeypatch: pytest.MonkeyPatch, keys: list[str]) -> None:
    """The CSPRNG's next session keys, as given."""
    draws = iter(keys)
    monkeypatch.setattr(sessions, "get_random_string", lambda *args: next(draws))


def test_a_new_sessions_key_is_djangos_kind() -> None:
    """32 characters of Django's session-key alphabet (lowercase letters and digits) from the
    CSPRNG, as Django's own backend draws them."""
    import re

    keys = set()
    for _ in range(20):
        store = SessionStore()
        store.create()
        assert re.fullmatch(r"[a-z0-9]{32}", store.session_key or "")
        keys.add(store.session_key)
    assert len(keys) == 20


def test_creating_a_session_never_read_keeps_the_key_it_drew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new key is not looked up as an old session: Django's load of a key it cannot find
    drops the key, and the session would be stored under yet another one."""
    drawing(monkeypatch, ["a" * 32, "b" * 32])
    store = SessionStore()
    store.create()  # never read nor written before
    assert store.session_key == "a" * 32
    assert list(Session.objects.values_list("session_key", flat=True)) == ["a" * 32]


def test_a_changed_session_is_one_update() -> None:
    store = SessionStore()
    store["who"] = "octocat"
    store.save()
    again = SessionStore(store.session_key)
    again["seen"] = 2
    with CaptureQueriesContext(connection) as ctx:
        again.save()
    assert statements(ctx) == ["UPDATE"]
    assert SessionStore(store.session_key).load() == {"who": "octocat", "seen": 2}


def test_a_key_already_taken_never_overwrites_that_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack the skipped free-key check must not open: a new session drawn with the key
    of someone's live session. The INSERT is refused and another key drawn; the victim's
    session keeps its data, the new one gets its own key."""
    victim = SessionStore()
    victim["_auth_user_id"] = "1"
    victim.create()
    other_key = "k" * 32
    drawing(monkeypatch, [victim.session_key, other_key])
    newcomer = SessionStore()
    newcomer["_auth_user_id"] = "2"
    newcomer.create()
    assert newcomer.session_key == other_key
    assert SessionStore(victim.session_key).load() == {"_auth_user_id": "1"}
    assert SessionStore(other_key).load() == {"_auth_user_id": "2"}
    assert Session.objects.count() == 2


def test_inside_a_transaction_a_taken_key_leaves_it_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """In an atomic block (ATOMIC_REQUESTS, say) Django's savepoint is kept: on PostgreSQL a
    refused INSERT without it would abort the caller's whole transaction."""
    victim = SessionStore()
    victim.create()
    drawing(monkeypatch, [victim.session_key, "n" * 32])
    with transaction.atomic():
        newcomer = SessionStore()
        newcomer.create()
        assert Session.objects.count() == 2  # the transaction still answers
    assert newcomer.session_key == "n" * 32


def test_saving_a_session_deleted_meanwhile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logout in another tab deleted the row: saving must not create it again (Django's
    middleware turns UpdateError into SessionInterrupted), nor pass silently."""
    store = SessionStore()
    store["who"] = "octocat"
    store.save()
    Session.objects.filter(session_key=store.session_key).delete()
    again: Any = SessionStore(store.session_key)
    again._session_cache = {"who": "octocat"}  # loaded before the delete
    again.modified = True
    with pytest.raises(UpdateError):
        again.save()
    assert not Session.objects.exists()
