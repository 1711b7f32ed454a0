"""Django's database sessions, written without the round trips that buy nothing (issue 11).

``SESSION_ENGINE = "mcp_consent.integrations.sessions"``: the same table, the same data and
the same keys as ``django.contrib.sessions.backends.db``; a project can switch either way at
any time, signed-in people stay signed in.

A new session (every sign-in: the upstream callback logs the person in) costs Django's backend
four statements: a check that the random key is free, then BEGIN, INSERT, COMMIT. Here it is
the INSERT alone, and a changed session one UPDATE instead of BEGIN, UPDATE, COMMIT:

- The check is redundant. A new session is only ever INSERTed (``must_create``), never
  UPDATEd, so a key that is taken is refused by the table's primary key, and ``create()``
  draws another (CreateError): another person's session is never overwritten, with or without
  the check. Django's own ``create()`` relies on exactly that for the race between its check
  and its INSERT.
- The transaction around one statement keeps a caller's transaction usable after a refused
  key; in autocommit the statement is atomic by itself. Inside a transaction (an
  ``atomic`` block, ATOMIC_REQUESTS) Django's savepoint is kept.

Only the sync API is changed (Django's views and middleware use it); the async one is
Django's own.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, UpdateError
from django.db import DatabaseError, IntegrityError, router, transaction
from django.utils.crypto import get_random_string

__all__ = ["SessionStore"]


class SessionStore(db.SessionStore):
    def _get_new_session_key(self) -> str:
        # Django's length and alphabet: 32 of 36 characters, 165 bits from the CSPRNG.
        return get_random_string(32, VALID_KEY_CHARS)

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        # Django's db backend reads the data so; django-stubs does not declare the method.
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]
        instance = self.create_model_instance(data)
        using = router.db_for_write(self.model, instance=instance)
        if transaction.get_connection(using).in_atomic_block:
            return super().save(must_create=must_create)
        try:
            instance.save(force_insert=must_create, force_update=not must_create, using=using)
        except IntegrityError as error:
            if must_create:
                raise CreateError from error
            raise
        except DatabaseError as error:
            if not must_create:  # the session was deleted meanwhile (a logout elsewhere)
                raise UpdateError from error
            raise
