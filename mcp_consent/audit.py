"""The tamper-evident audit trail (issue 4, SM-04).

``record()`` writes one AuditEvent in the caller's transaction. Events form one hash
chain: each row's hash covers its content and the previous row's hash, and the chain head
row is locked (SELECT ... FOR UPDATE) for the write, so concurrent writers on any number of
app servers append one after the other instead of forking the chain. A removed, inserted
or edited row breaks the chain; ``manage.py mcp_consent_verify_audit`` names the first one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest

from .models import AuditChainHead, AuditEvent, Consent, MCPClient

log = logging.getLogger(__name__)

Action = AuditEvent.Action
Actor = AuditEvent.Actor

# Never a secret in the trail, whatever a caller passes by mistake.
SECRET_MARKERS = ("token", "secret", "code", "state", "password", "verifier", "cookie", "nonce")
GENESIS = "0" * 64


@dataclass(frozen=True)
class ActorInfo:
    type: str
    user_id: int | None = None
    label: str = ""


def actor_from(request: HttpRequest | None, *, operator: bool = False) -> ActorInfo:
    """The user behind a request (an operator in the admin), else anonymous."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return ActorInfo(Actor.OPERATOR if operator else Actor.USER, user.pk, user.get_username())
    return ActorInfo(Actor.ANONYMOUS)


def client_actor(client: MCPClient | None) -> ActorInfo:
    label = client.application.client_id if client is not None else ""
    return ActorInfo(Actor.CLIENT, None, label)


SYSTEM = ActorInfo(Actor.SYSTEM, None, "system")


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if any(marker in key.lower() for marker in SECRET_MARKERS) and key not in {
            "scopes_requested",
            "consent_id",
        }:
            log.error("audit detail %r dropped: keys naming secrets are never recorded", key)
            continue
        clean[key] = value
    return clean


def _content(event: AuditEvent) -> str:
    """The canonical text the hash covers (every recorded field except the hash itself)."""
    return json.dumps(
        {
            "created_at": event.created_at.isoformat(),
            "action": event.action,
            "actor_type": event.actor_type,
            "actor_user_id": event.actor_user_id,
            "actor_label": event.actor_label,
            "subject_user_id": event.subject_user_id,
            "client_id": event.client_id,
            "consent_id": event.consent_id,
            "ip_address": event.ip_address,
            "user_agent": event.user_agent,
            "details": event.details,
            "previous_hash": event.previous_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_content(event).encode()).hexdigest()


def record(
    action: str,
    *,
    actor: ActorInfo,
    request: HttpRequest | None = None,
    client: MCPClient | None = None,
    client_id: str = "",
    consent: Consent | None = None,
    subject_user_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    ip = None
    agent = ""
    if request is not None:
        ip = request.META.get("REMOTE_ADDR") or None
        agent = request.META.get("HTTP_USER_AGENT", "")[:512]
    if consent is not None and subject_user_id is None:
        subject_user_id = consent.user_id
    if client is None and consent is not None:
        client = consent.client
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event = AuditEvent(
            action=action,
            actor_type=actor.type,
            actor_user_id=actor.user_id,
            actor_label=actor.label[:255],
            subject_user_id=subject_user_id,
            client_id=(client.application.client_id if client is not None else client_id)[:255],
            consent_id=consent.pk if consent is not None else None,
            ip_address=ip,
            user_agent=agent,
            details=json.loads(json.dumps(_scrub(details or {}), default=str)),
            previous_hash=head.last_hash,
        )
        event.hash = event_hash(event)
        event.save()
        head.last_hash, head.last_event_id = event.hash, event.pk
        head.save(update_fields=["last_hash", "last_event_id"])
    return event


@dataclass
class ChainReport:
    checked: int
    first_broken: AuditEvent | None
    problem: str = ""


def verify(events: Iterable[AuditEvent] | None = None) -> ChainReport:
    """Walk the chain in id order; report the first row whose hash or link does not hold."""
    previous = GENESIS
    checked = 0
    rows = events if events is not None else AuditEvent.objects.order_by("pk").iterator()
    last: AuditEvent | None = None
    for event in rows:
        if event.previous_hash != previous:
            return ChainReport(
                checked, event, "does not link to the row before it (a row was removed or inserted)"
            )
        if event_hash(event) != event.hash:
            return ChainReport(
                checked, event, "content does not match its hash (the row was edited)"
            )
        previous = event.hash
        checked += 1
        last = event
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and head.last_hash != previous:
        return ChainReport(
            checked, last, "is not the recorded end of the chain (rows after it were removed)"
        )
    return ChainReport(checked, None)
