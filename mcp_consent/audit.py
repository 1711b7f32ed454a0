"""The tamper-evident audit trail (issue 4, SM-04, SEC-06).

``record()`` writes one AuditEvent in the caller's transaction.

SEC-06, keyed chains: each row's hash is an HMAC-SHA256, under a key that lives in the
settings (``MCP_CONSENT["AUDIT_KEYS"]``) and never in the database, of its content and the
previous row's hash. Whoever can only write the table cannot recompute a valid chain after
editing, removing or reordering a row; ``manage.py mcp_consent_verify_audit`` names the
first broken row, and ``--anchor`` prints a value to keep outside the database, against
which a later ``--expect-anchor`` run detects a rewrite even by someone holding the key.

Issue 11, no global lock: there are ``AUDIT_CHAINS`` independent chains, each with its own
head row. The chain of a transaction is chosen by a stable key (the client id, else the
user, else the address), so flows of unrelated clients lock different head rows and run
concurrently across app servers, while the events of one chain still append one after the
other (SELECT ... FOR UPDATE on its head). A transaction writes all its events to the chain
of its first event, so it never holds two head locks (no lock-order deadlock between them).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from .addresses import client_ip
from .app_settings import app_settings
from .models import AuditChainHead, AuditEvent, Consent, MCPClient

log = logging.getLogger(__name__)

Action = AuditEvent.Action
Actor = AuditEvent.Actor
Version = AuditEvent.Version
GENESIS = "0" * 64

# Issue 9 item 5 (STYLE 15): what an event may record is named here, per action; nothing is
# guessed from a key's name. A detail not listed for its action is dropped (and logged as
# the programming error it is), so a secret passed by mistake never reaches the table, and
# tests/test_audit.py checks that every call site's details are listed here.
DETAILS: Mapping[str, frozenset[str]] = {
    Action.CLIENT_REGISTERED: frozenset({"source", "redirect_uris", "client_name", "kind", "name"}),
    Action.CLIENT_UPDATED: frozenset(
        {"displayed_metadata_changed", "redirect_uris", "client_name", "consents_invalidated"}
    ),
    Action.CLIENT_DISABLED: frozenset({"reason"}),
    Action.CLIENT_DELETED: frozenset({"reason", "client_name", "source"}),
    Action.REGISTRATION_REFUSED: frozenset({"reason", "endpoint", "error", "description"}),
    Action.CONSENT_SHOWN: frozenset({"scopes", "redirect_uri"}),
    Action.CONSENT_APPROVED: frozenset(
        {"scopes_requested", "redirect_uri", "resource", "remembered", "correlation_id"}
    ),
    Action.CONSENT_DENIED: frozenset({"scopes", "redirect_uri"}),
    Action.CONSENT_GRANTED: frozenset(
        {"scopes", "upstream_scopes", "scopes_previously_granted", "elevation", "correlation_id"}
    ),
    Action.CONSENT_REVOKED: frozenset({"reason", "oauth_tokens_revoked", "scopes"}),
    Action.CONSENT_EXPIRED: frozenset({"reason", "oauth_tokens_revoked", "scopes"}),
    Action.CALLBACK_ACCEPTED: frozenset({"correlation_id", "upstream_login"}),
    Action.CALLBACK_REFUSED: frozenset(
        {"reason", "outcome", "correlation_id", "aggregated_seconds"}
    ),
    Action.SIGNED_IN: frozenset({"correlation_id", "upstream_login"}),
    Action.TOKEN_ISSUED: frozenset(
        {"grant_type", "scopes_granted", "resource", "expires_in", "family"}
    ),
    Action.TOKEN_REFRESHED: frozenset(
        {"grant_type", "scopes_granted", "resource", "expires_in", "family"}
    ),
    # grant_still_active: RFC 7009 by the client; the rest: an operator's revocation of
    # tokens that had no live consent (flows.revoke_tokens, SEC-09).
    Action.TOKEN_REVOKED: frozenset(
        {"grant_still_active", "reason", "oauth_tokens_revoked", "no_live_consent"}
    ),
    Action.REFRESH_TOKEN_REUSE: frozenset({"family", "family_revoked"}),
    Action.CODE_REUSE: frozenset({"correlation_id", "tokens_revoked"}),
    Action.UPSTREAM_TOKEN_REVOKED: frozenset({"outcome"}),
    Action.RATE_LIMITED: frozenset({"reason", "endpoint"}),
    Action.AUDIT_CHAIN_KEYED: frozenset({"legacy_events"}),
    Action.CIMD_RULE_CHANGED: frozenset({"domain", "policy", "note", "deleted"}),
}


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


def _scrub(action: str, details: dict[str, Any]) -> dict[str, Any]:
    """Issue 9 item 5: keep exactly the details named for this action in DETAILS."""
    allowed = DETAILS.get(action, frozenset())
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if key not in allowed:
            log.error("audit detail %r is not listed for %r in audit.DETAILS: dropped", key, action)
            continue
        clean[key] = value
    return clean


# --- Keys (SEC-06) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    id: str
    secret: bytes = field(repr=False)


@functools.lru_cache(maxsize=16)
def _audit_key(material: bytes) -> AuditKey:
    # Derived once per configured secret (issue 11: every audited write asked for it). The
    # settings are read on each call of audit_keys(), so a changed AUDIT_KEYS still applies.
    # HKDF with its own purpose: the same secret used elsewhere (a vault key, SECRET_KEY)
    # yields an unrelated audit key. The id names the key in each row without revealing it.
    secret = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"mcp_consent.audit", info=b"audit-chain-hmac"
    ).derive(material)
    return AuditKey(hashlib.sha256(b"mcp_consent audit key id" + secret).hexdigest()[:16], secret)


def audit_keys() -> list[AuditKey]:
    """The configured audit keys, newest (signing) first.

    Without AUDIT_KEYS a key is derived from SECRET_KEY so the demo runs; outside DEBUG the
    system check mcp_consent.E012 refuses that, since SECRET_KEY often sits next to the
    database credentials.
    """
    configured = app_settings.AUDIT_KEYS
    if configured:
        return [_audit_key(key.encode()) for key in configured]
    return [_audit_key(settings.SECRET_KEY.encode())]


def _content(event: AuditEvent) -> str:
    """The canonical text the hash covers (every recorded field except the hash itself)."""
    fields: dict[str, Any] = {
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
    }
    if event.version != Version.SHA256:
        # Rows written before SEC-06 keep their original content and verify as they were.
        fields.update(chain=event.chain, version=event.version, key_id=event.key_id)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def event_hash(event: AuditEvent, keys: list[AuditKey] | None = None) -> str | None:
    """The hash the row must carry, or None when its key is not configured."""
    content = _content(event).encode()
    if event.version == Version.SHA256:
        return hashlib.sha256(content).hexdigest()
    for key in keys if keys is not None else audit_keys():
        if key.id == event.key_id:
            return hmac.new(key.secret, content, hashlib.sha256).hexdigest()
    return None


# --- Writing --------------------------------------------------------------------------------

_STICKY = "_mcp_consent_audit_chain"


def seal_legacy_rows(event_model: Any, head_model: Any) -> None:
    """SEC-06, migration 0004: a keyed row after the unkeyed rows of the single old chain.

    Its HMAC covers the last unkeyed hash, so a later edit of an old row breaks the link to
    it, and verify refuses a chain that ends unkeyed (rewritten without the key). Takes the
    models as arguments so the migration can pass its historical ones.
    """
    legacy = event_model.objects.filter(version=Version.SHA256)
    count = legacy.count()
    if not count:
        return
    head, _ = head_model.objects.get_or_create(chain=0)
    key = audit_keys()[0]
    event = event_model(
        action=Action.AUDIT_CHAIN_KEYED,
        actor_type=Actor.SYSTEM,
        actor_label="system",
        details={"legacy_events": count},
        previous_hash=head.last_hash,
        chain=0,
        version=Version.HMAC_SHA256,
        key_id=key.id,
    )
    event.hash = event_hash(event, [key]) or ""
    event.save()
    head.last_hash, head.last_event_id = event.hash, event.pk
    head.save(update_fields=["last_hash", "last_event_id"])


def chain_of(shard_key: str) -> int:
    """The chain a transaction whose first event has this key writes to (stable, spread)."""
    digest = hashlib.sha256(shard_key.encode()).digest()
    return int.from_bytes(digest[:4], "big") % app_settings.AUDIT_CHAINS


def _chain_for(shard_key: str) -> int:
    """The chain of the current transaction: that of its first event, else by ``shard_key``.

    Remembered on the connection together with an on_commit marker: Django drops the marker
    when the transaction commits or rolls back (to the caller's savepoint around the event
    that took the head lock, which releases that lock too), so the next transaction chooses
    afresh.
    """
    connection = transaction.get_connection()
    sticky = getattr(connection, _STICKY, None)
    if sticky is not None and any(entry[1] is sticky[1] for entry in connection.run_on_commit):
        return int(sticky[0])
    chain = chain_of(shard_key)

    def marker() -> None:
        pass

    transaction.on_commit(marker)
    setattr(connection, _STICKY, (chain, marker))
    return chain


def event(
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
    """One event, not yet written: ``record_all`` appends it to its chain."""
    ip = None
    agent = ""
    if request is not None:
        ip = client_ip(request)
        agent = request.META.get("HTTP_USER_AGENT", "")[:512]
    if consent is not None and subject_user_id is None:
        subject_user_id = consent.user_id
    if client is None and consent is not None:
        client = consent.client
    client_id = (client.application.client_id if client is not None else client_id)[:255]
    return AuditEvent(
        action=action,
        actor_type=actor.type,
        actor_user_id=actor.user_id,
        actor_label=actor.label[:255],
        subject_user_id=subject_user_id,
        client_id=client_id,
        consent_id=consent.pk if consent is not None else None,
        ip_address=ip,
        user_agent=agent,
        details=json.loads(json.dumps(_scrub(action, details or {}), default=str)),
    )


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
    """Append one event to its chain, inside the caller's transaction."""
    pending = event(
        action,
        actor=actor,
        request=request,
        client=client,
        client_id=client_id,
        consent=consent,
        subject_user_id=subject_user_id,
        details=details,
    )
    return record_all([pending])[0]


def record_all(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append ``events``, in this order, to the chain of the first, in the caller's transaction.

    Issue 11: the events of one step (the callback's consent granted and callback accepted)
    take the chain head once, go in one INSERT and move the head once (3 statements, not 3
    per event). Each still links to the one before it, as if recorded one by one.
    """
    key = audit_keys()[0]
    first = events[0]
    # Inside the caller's transaction no savepoint of its own (2 statements less): an error
    # here rolls back the caller's whole transaction with it, so no event is ever lost alone.
    with transaction.atomic(savepoint=False):
        chain = _chain_for(
            first.client_id or f"user:{first.subject_user_id or ''}:{first.ip_address or ''}"
        )
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(chain=chain)
        previous = head.last_hash
        for pending in events:
            pending.previous_hash, pending.chain = previous, chain
            pending.version, pending.key_id = Version.HMAC_SHA256, key.id
            pending.hash = previous = event_hash(pending, [key]) or ""
        if (
            len(events) > 1
            and transaction.get_connection().features.can_return_rows_from_bulk_insert
        ):
            # In list order, each row's primary key given back (the chain is walked by key).
            AuditEvent.objects.bulk_create(events)
        else:
            for pending in events:
                pending.save()
        head.last_hash, head.last_event_id = previous, events[-1].pk
        head.save(update_fields=["last_hash", "last_event_id"])
    return events


# --- Verifying ------------------------------------------------------------------------------


class AnchorError(ValueError):
    """An anchor value that is not one ``--anchor`` printed."""


@dataclass(frozen=True)
class Anchor:
    """SEC-06: a point in every chain (its length and the hash there), to keep off the database.

    Text form: ``mcpa1:<chain>.<length>,...:<SHA-256 over the hashes at those points>``.
    """

    lengths: dict[int, int]
    digest: str

    def __str__(self) -> str:
        points = ",".join(f"{chain}.{length}" for chain, length in sorted(self.lengths.items()))
        return f"mcpa1:{points}:{self.digest}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        try:
            prefix, points, digest = text.strip().split(":")
            if prefix != "mcpa1" or len(digest) != 64:
                raise ValueError
            int(digest, 16)
            lengths = {}
            for point in filter(None, points.split(",")):
                chain, length = point.split(".")
                lengths[int(chain)] = int(length)
        except ValueError:
            raise AnchorError(
                "not an anchor printed by mcp_consent_verify_audit --anchor"
            ) from None
        return cls(lengths, digest)

    @staticmethod
    def digest_of(hashes_at: dict[int, str]) -> str:
        text = "\n".join(f"{chain}.{hashes_at[chain]}" for chain in sorted(hashes_at))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ChainReport:
    checked: int
    first_broken: AuditEvent | None
    problem: str = ""
    legacy: int = 0
    chain: int | None = None
    anchor: Anchor | None = None

    @property
    def intact(self) -> bool:
        return not self.problem


@dataclass
class _Walk:
    """What walking one chain found."""

    checked: int = 0
    legacy: int = 0
    last_hash: str = GENESIS
    at_anchor: str | None = None
    broken: AuditEvent | None = None
    problem: str = ""

    def fail(self, event: AuditEvent | None, problem: str) -> _Walk:
        self.broken, self.problem = event, problem
        return self


def _walk(chain: int, keys: list[AuditKey], anchored_length: int | None) -> _Walk:
    """One chain in id order, up to its first broken row."""
    walk = _Walk()
    last: AuditEvent | None = None
    for event in AuditEvent.objects.filter(chain=chain).order_by("pk").iterator():
        if event.previous_hash != walk.last_hash:
            return walk.fail(
                event,
                "does not link to the row before it (a row was removed or inserted, or rows reordered)",
            )
        if event.version == Version.SHA256:
            # Unkeyed rows exist only from before SEC-06, all in chain 0, before any keyed
            # row: anything else is a row made to look old to escape the key.
            if chain != 0 or walk.legacy != walk.checked:
                return walk.fail(
                    event, "is an unkeyed row after keyed ones (only keyed are written)"
                )
            walk.legacy += 1
        expected = event_hash(event, keys)
        if expected is None:
            return walk.fail(event, f"was keyed with audit key {event.key_id!r}, not in AUDIT_KEYS")
        if not hmac.compare_digest(expected, event.hash):
            return walk.fail(event, "content does not match its hash (the row was edited)")
        walk.last_hash = event.hash
        walk.checked += 1
        if walk.checked == anchored_length:
            walk.at_anchor = event.hash
        last = event
    if walk.legacy and walk.legacy == walk.checked:
        # Migration 0004 sealed the unkeyed rows with a keyed one: without a keyed row after
        # them, the chain was rewritten unkeyed (a downgrade to escape the key).
        return walk.fail(last, "ends with unkeyed rows that no keyed row seals (rewritten unkeyed)")
    return walk


def verify(expect: Anchor | None = None) -> ChainReport:
    """Walk every chain; report the first row whose hash or link does not hold.

    With ``expect``, also check that every chain still holds, at the anchored length, the
    hash it held when the anchor was taken (a chain rewritten with the key is detected).
    """
    keys = audit_keys()
    heads = {head.chain: head for head in AuditChainHead.objects.all()}
    chains = set(AuditEvent.objects.values_list("chain", flat=True).distinct()) | set(heads)
    if expect is not None:
        chains |= set(expect.lengths)
    total = legacy_total = 0
    lengths: dict[int, int] = {}
    last_hashes: dict[int, str] = {}
    anchored: dict[int, str] = {}
    for chain in sorted(chains):
        wanted = expect.lengths.get(chain) if expect is not None else None
        walk = _walk(chain, keys, wanted)
        total += walk.checked
        legacy_total += walk.legacy
        if walk.problem:
            return ChainReport(total, walk.broken, walk.problem, legacy_total, chain)
        head = heads.get(chain)
        if (head.last_hash if head is not None else GENESIS) != walk.last_hash:
            last_row = AuditEvent.objects.filter(chain=chain).order_by("-pk").first()
            return ChainReport(
                total,
                last_row,
                "is not the recorded end of the chain (rows after it were removed)",
                legacy_total,
                chain,
            )
        if walk.checked:
            lengths[chain], last_hashes[chain] = walk.checked, walk.last_hash
        if wanted:
            if walk.at_anchor is None:
                return ChainReport(
                    total, None, f"chain {chain} is shorter than the anchor", legacy_total, chain
                )
            anchored[chain] = walk.at_anchor
    if expect is not None and Anchor.digest_of(anchored) != expect.digest:
        return ChainReport(
            total,
            None,
            "the chain does not match the anchor (events up to it were rewritten)",
            legacy_total,
        )
    anchor = Anchor(lengths, Anchor.digest_of(last_hashes))
    return ChainReport(total, None, "", legacy_total, None, anchor)
