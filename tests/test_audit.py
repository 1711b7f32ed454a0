"""The audit trail: written with each change, append-only, hash-chained, verifiable (issue 4)."""

from __future__ import annotations

import hashlib
import hmac
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from mcp_consent import audit
from mcp_consent.models import AuditChainHead, AuditEvent, AuditImmutableError
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory
from tests.mcp_tokens import issue_token

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


def test_a_flow_writes_its_events_in_order() -> None:
    """Registration, consent shown/approved, callback, consent recorded, token issued and refreshed."""
    issued = issue_token()
    assert issued.refresh().status_code == 200
    assert actions() == [
        A.CLIENT_REGISTERED,
        A.CONSENT_SHOWN,
        A.CONSENT_APPROVED,
        A.CONSENT_GRANTED,
        A.CALLBACK_ACCEPTED,
        A.TOKEN_ISSUED,
        A.TOKEN_REFRESHED,
    ]
    approved = AuditEvent.objects.get(action=A.CONSENT_APPROVED)
    granted = AuditEvent.objects.get(action=A.CONSENT_GRANTED)
    # SM-04: requested, then granted vs previously granted, with one correlation id.
    assert approved.details["scopes_requested"] == ["items:read"]
    assert granted.details["elevation"] == ["items:read"]
    assert approved.details["correlation_id"] == granted.details["correlation_id"]
    assert approved.ip_address == "127.0.0.1"
    assert approved.actor_type == "anonymous"


def test_no_secret_ever_reaches_the_trail(upstream_http) -> None:
    """Issue 4: each event has actor, IP, user agent, client, consent and details, never a secret."""
    issued = issue_token()
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    for secret in (issued.access_token, issued.refresh_token):
        assert secret not in dump
    for request in upstream_http.requests:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            assert header.split()[1] not in dump
    assert "state=" not in dump
    assert "code=" not in dump


def test_refusals_are_audited_with_their_reason() -> None:
    browser = Browser()
    browser.get("/upstream/callback/?state=forged&code=x")
    refused = AuditEvent.objects.get(action=A.CALLBACK_REFUSED)
    assert refused.details["reason"] == "unknown state"
    Browser().client.post(
        "/register/",
        json.dumps({"redirect_uris": ["http://evil.example/cb"]}),
        content_type="application/json",
        HTTP_HOST="127.0.0.1:8000",
    )
    assert (
        AuditEvent.objects.get(action=A.REGISTRATION_REFUSED).details["error"]
        == "invalid_redirect_uri"
    )


def test_denial_is_audited_and_stores_nothing_else() -> None:
    client = MCPClientFactory()
    browser = Browser()
    browser.post_form(browser.authorize(authorize_params(client)), "deny")
    assert actions()[-1] == A.CONSENT_DENIED


def test_events_cannot_be_changed_or_deleted() -> None:
    """Append-only: save of an existing row, delete, queryset update and delete all raise."""
    event = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="x")
    event.action = A.CLIENT_DELETED
    with pytest.raises(AuditImmutableError):
        event.save()
    with pytest.raises(AuditImmutableError):
        event.delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.filter(pk=event.pk).update(action=A.CLIENT_DELETED)
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.all().delete()


def test_verify_command_accepts_an_intact_chain() -> None:
    issue_token()
    out = StringIO()
    call_command("mcp_consent_verify_audit", stdout=out)
    assert "audit chain intact" in out.getvalue()


def _raw_sql(sql: str, params: list) -> None:
    """What an intruder with database access does, bypassing the ORM's refusals."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE mcp_consent_auditevent DISABLE TRIGGER mcp_consent_auditevent_immutable"
            )
            cursor.execute(sql, params)
            cursor.execute(
                "ALTER TABLE mcp_consent_auditevent ENABLE TRIGGER mcp_consent_auditevent_immutable"
            )
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


@pytest.mark.parametrize(
    "tamper, problem",
    [
        (
            "UPDATE mcp_consent_auditevent SET actor_label = 'someone else' WHERE id = %s",
            "was edited",
        ),
        ("DELETE FROM mcp_consent_auditevent WHERE id = %s", "removed or inserted"),
    ],
)
def test_a_tampered_row_is_detected_and_named(tamper: str, problem: str) -> None:
    """Issue 4: the verify command names the first broken row."""
    events = [
        audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=f"c{i}") for i in range(5)
    ]
    target = events[2]
    _raw_sql(tamper, [target.pk])
    with pytest.raises(CommandError) as error:
        call_command("mcp_consent_verify_audit", stdout=StringIO())
    named = target.pk if "edited" in problem else events[3].pk
    assert f"event #{named}" in str(error.value)
    assert problem in str(error.value)


def test_removing_the_newest_rows_is_detected() -> None:
    events = [
        audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=f"c{i}") for i in range(3)
    ]
    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [events[-1].pk])
    with pytest.raises(CommandError, match="end of the chain"):
        call_command("mcp_consent_verify_audit", stdout=StringIO())


def test_postgresql_itself_refuses_updates() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the database trigger exists on PostgreSQL; other backends rely on the model")
    from django.db import DatabaseError, transaction

    event = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="x")
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE mcp_consent_auditevent SET action = 'x' WHERE id = %s", [event.pk])


# --- SEC-06: a keyed chain, anchors, no TRUNCATE; issue 11: several chains ---------------------


def _rewrite(event_id: int, **columns: object) -> None:
    """An intruder's UPDATE of one row (triggers switched off as the table owner could)."""
    assignments = ", ".join(f"{name} = %s" for name in columns)
    _raw_sql(
        f"UPDATE mcp_consent_auditevent SET {assignments} WHERE id = %s",  # noqa: S608 - test
        [*columns.values(), event_id],
    )


def _rehash_chain(chain: int, *, hasher) -> None:
    """Recompute every hash of one chain and its head the way ``hasher`` says: what an
    intruder who can write the table does after editing a row."""
    previous = audit.GENESIS
    for event in AuditEvent.objects.filter(chain=chain).order_by("pk"):
        event.previous_hash = previous
        digest = hasher(event)
        _rewrite(event.pk, previous_hash=previous, hash=digest, version=event.version)
        previous = digest
    AuditChainHead.objects.filter(chain=chain).update(last_hash=previous)


def _verify_fails(*args: str) -> str:
    with pytest.raises(CommandError) as error:
        call_command("mcp_consent_verify_audit", *args, stdout=StringIO())
    return str(error.value)


def _events_in_one_chain(n: int) -> list[AuditEvent]:
    return [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="c") for _ in range(n)]


def test_sec06_an_edit_rehashed_without_the_key_is_detected() -> None:
    """SEC-06: the old attack -- edit a row, recompute SHA-256 over it, every later row and the
    head -- no longer verifies: the hashes are HMACs under a key the database does not hold."""
    events = _events_in_one_chain(4)
    _rewrite(events[1].pk, actor_label="someone else")

    def unkeyed(event: AuditEvent) -> str:
        event.actor_label = "someone else" if event.pk == events[1].pk else event.actor_label
        return hashlib.sha256(audit._content(event).encode()).hexdigest()

    _rehash_chain(events[0].chain, hasher=unkeyed)
    assert f"event #{events[0].pk}" in _verify_fails()
    assert "was edited" in _verify_fails()


def test_sec06_a_rewrite_with_another_key_is_detected(settings) -> None:
    """SEC-06: a chain recomputed under a key of the intruder's choosing does not verify."""
    events = _events_in_one_chain(3)
    forged = audit._audit_key(b"the intruder's key")

    def other_key(event: AuditEvent) -> str:
        return hmac.new(forged.secret, audit._content(event).encode(), hashlib.sha256).hexdigest()

    _rehash_chain(events[0].chain, hasher=other_key)
    assert "was edited" in _verify_fails()
    for event in events:
        _rewrite(event.pk, key_id=forged.id)
    _rehash_chain(
        events[0].chain,
        hasher=lambda e: other_key(AuditEvent(**{**_fields(e), "key_id": forged.id})),
    )
    assert "not in AUDIT_KEYS" in _verify_fails()


def _fields(event: AuditEvent) -> dict:
    return {f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields}


def test_sec06_a_downgrade_to_unkeyed_rows_is_detected() -> None:
    """SEC-06: rows marked as written before the keyed chain (version 1) and rehashed with
    plain SHA-256 do not verify: unkeyed rows exist only in chain 0, before a keyed seal."""
    events = _events_in_one_chain(3)
    for event in events:
        _rewrite(event.pk, version=AuditEvent.Version.SHA256)

    def legacy(event: AuditEvent) -> str:
        event.version = AuditEvent.Version.SHA256
        return hashlib.sha256(audit._content(event).encode()).hexdigest()

    _rehash_chain(events[0].chain, hasher=legacy)
    message = _verify_fails()
    assert "unkeyed" in message, message


def test_sec06_anchor_detects_a_rewrite_by_someone_holding_the_key() -> None:
    """SEC-06: `--anchor` prints the chains' state; later events extend it and still match;
    a rewrite of an anchored row, even with the key, no longer matches the anchor."""
    events = _events_in_one_chain(3)
    out = StringIO()
    call_command("mcp_consent_verify_audit", "--anchor", stdout=out)
    anchor = out.getvalue().strip()
    assert anchor.startswith("mcpa1:")
    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="c")
    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="other")
    out = StringIO()
    call_command("mcp_consent_verify_audit", "--expect-anchor", anchor, stdout=out)
    assert "match the anchor" in out.getvalue()

    key = audit.audit_keys()[0]
    _rewrite(events[1].pk, actor_label="someone else")

    def keyed(event: AuditEvent) -> str:
        event.actor_label = "someone else" if event.pk == events[1].pk else event.actor_label
        return audit.event_hash(event, [key]) or ""

    _rehash_chain(events[0].chain, hasher=keyed)
    call_command("mcp_consent_verify_audit", stdout=StringIO())  # the key holder's rewrite...
    assert "does not match the anchor" in _verify_fails("--expect-anchor", anchor)  # ...caught


def test_sec06_anchor_detects_a_shortened_chain() -> None:
    events = _events_in_one_chain(3)
    anchor = str(audit.verify().anchor)
    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [events[-1].pk])
    AuditChainHead.objects.filter(chain=events[0].chain).update(last_hash=events[1].hash)
    call_command("mcp_consent_verify_audit", stdout=StringIO())
    assert "shorter than the anchor" in _verify_fails("--expect-anchor", anchor)


def test_sec06_a_malformed_anchor_is_refused() -> None:
    _events_in_one_chain(1)
    assert "not an anchor" in _verify_fails("--expect-anchor", "sha256:deadbeef")


@pytest.mark.django_db(transaction=True)
def test_issue11_unrelated_clients_write_to_separate_chains_and_each_verifies() -> None:
    """Issue 11: the chain is chosen by the client id; events of one client stay in one
    chain; verify walks every chain and an edit, a removal or a reordering in any of them is
    named (SEC-06)."""
    ids = [f"client-{i}" for i in range(12)]
    events = {
        cid: [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=cid)] for cid in ids
    }
    for cid in ids:
        events[cid].append(audit.record(A.CLIENT_DISABLED, actor=audit.SYSTEM, client_id=cid))
    chains = {e.chain for rows in events.values() for e in rows}
    assert len(chains) > 3
    for rows in events.values():
        assert rows[0].chain == rows[1].chain == audit.chain_of(rows[0].client_id)
    assert AuditChainHead.objects.filter(chain__in=chains).count() == len(chains)
    call_command("mcp_consent_verify_audit", stdout=StringIO())

    # Reorder two rows of one chain (not chain 0): swap their ids.
    cid = next(c for c in ids if events[c][0].chain != 0)
    first, second = events[cid]
    _raw_sql("UPDATE mcp_consent_auditevent SET id = %s WHERE id = %s", [-1, first.pk])
    _raw_sql("UPDATE mcp_consent_auditevent SET id = %s WHERE id = %s", [first.pk, second.pk])
    _raw_sql("UPDATE mcp_consent_auditevent SET id = %s WHERE id = %s", [second.pk, -1])
    message = _verify_fails()
    assert f"audit chain {first.chain} broken" in message
    assert "reordered" in message


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "tamper, problem",
    [
        ("UPDATE mcp_consent_auditevent SET actor_label = 'x' WHERE id = %s", "was edited"),
        ("DELETE FROM mcp_consent_auditevent WHERE id = %s", "removed or inserted"),
    ],
)
def test_issue11_tampering_in_any_chain_is_named(tamper: str, problem: str) -> None:
    ids = [f"client-{i}" for i in range(8)]
    rows = [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=c) for c in ids * 2]
    target = next(r for r in rows[: len(ids)] if r.chain != 0)
    _raw_sql(tamper, [target.pk])
    message = _verify_fails()
    assert f"audit chain {target.chain} broken" in message
    assert problem in message


def test_sec06_postgresql_refuses_truncate() -> None:
    """SEC-06: TRUNCATE fires no row trigger; a statement trigger refuses it."""
    if connection.vendor != "postgresql":
        pytest.skip("the database trigger exists on PostgreSQL; other backends rely on the model")
    from django.db import DatabaseError, transaction

    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="x")
    for table in ("mcp_consent_auditevent", "mcp_consent_auditchainhead"):
        with pytest.raises(DatabaseError, match="cannot be truncated"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_sec06_rows_from_before_the_keyed_chain_keep_verifying_and_are_sealed() -> None:
    """SEC-06: rows written by the unkeyed SHA-256 chain verify after migration 0004, which
    seals them with a keyed row; an edit of an old row is still detected afterwards."""
    from django.db.migrations.executor import MigrationExecutor

    before = [("mcp_consent", "0003_consent_auditor_group")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldEvent = old_apps.get_model("mcp_consent", "AuditEvent")
    OldHead = old_apps.get_model("mcp_consent", "AuditChainHead")
    previous, ids = audit.GENESIS, []
    for i in range(3):  # what audit.record wrote before SEC-06
        event = OldEvent(
            action=A.CLIENT_UPDATED,
            actor_type="system",
            client_id=f"old{i}",
            previous_hash=previous,
        )
        event.version = AuditEvent.Version.SHA256  # _content's switch; not a column yet
        event.chain = event.key_id = None
        event.hash = hashlib.sha256(audit._content(event).encode()).hexdigest()
        event.save()
        previous = event.hash
        ids.append(event.pk)
    OldHead.objects.create(pk=1, last_hash=previous, last_event_id=ids[-1])

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert (
        list(AuditEvent.objects.order_by("pk").values_list("version", "chain"))[:3]
        == [(AuditEvent.Version.SHA256, 0)] * 3
    )
    seal = AuditEvent.objects.get(action=A.AUDIT_CHAIN_KEYED)
    assert seal.details == {"legacy_events": 3}
    assert seal.actor_type == AuditEvent.Actor.SYSTEM
    assert seal.actor_label == "system"
    assert seal.previous_hash == previous
    out = StringIO()
    call_command("mcp_consent_verify_audit", stdout=out)
    assert "4 event(s) verified" in out.getvalue()
    assert "3 unkeyed" in out.getvalue()
    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="new")
    call_command("mcp_consent_verify_audit", stdout=StringIO())

    _rewrite(ids[1], actor_label="someone else")
    assert "was edited" in _verify_fails()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_issue11_writers_on_different_chains_do_not_wait_for_each_other() -> None:
    """Issue 11 on PostgreSQL: while one transaction holds its chain's head (an audited flow
    not yet committed), a writer on another chain commits at once; a writer on the same
    chain waits (the control: without it, this test could not fail)."""
    import threading

    from django.db import OperationalError, transaction

    from tests.db_state import require_postgresql

    require_postgresql("row locks held by concurrent transactions")
    mine = "client-a"
    other = next(
        f"client-{i}" for i in range(100) if audit.chain_of(f"client-{i}") != audit.chain_of(mine)
    )
    same = next(
        f"client-{i}"
        for i in range(100, 1000)
        if audit.chain_of(f"client-{i}") == audit.chain_of(mine)
    )
    for cid in (mine, other, same):  # the heads exist, as on a server that ran a while
        audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=cid)
    holding, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def holder() -> None:
        try:
            with transaction.atomic():
                audit.record(A.CLIENT_DISABLED, actor=audit.SYSTEM, client_id=mine)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    def writer(cid: str) -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '2s'")
                audit.record(A.CLIENT_DISABLED, actor=audit.SYSTEM, client_id=cid)
            results[cid] = "committed"
        except OperationalError as exc:
            results[cid] = exc
        finally:
            connection.close()

    held = threading.Thread(target=holder)
    held.start()
    assert holding.wait(30)
    for cid in (other, same):
        thread = threading.Thread(target=writer, args=(cid,))
        thread.start()
        thread.join(30)
    release.set()
    held.join(30)
    assert results[other] == "committed"
    assert isinstance(results[same], OperationalError)
    assert "lock timeout" in str(results[same])
    out = StringIO()
    call_command("mcp_consent_verify_audit", stdout=out)
    assert "5 event(s) verified" in out.getvalue()


# --- Issue 9 item 5 / issue 12: what is recorded is named, not guessed from key names ---------


def test_every_action_names_the_details_it_records() -> None:
    """STYLE 15: the allow-list covers every kind of event, and nothing else."""
    assert set(audit.DETAILS) == set(AuditEvent.Action.values)


# Keyword arguments of audit.record that are not details.
RECORD_KWARGS = {"actor", "request", "client", "client_id", "consent", "subject_user_id"}


def _audited_call_sites() -> list[tuple[str, int, set[str], set[str]]]:
    """Every call in mcp_consent that records an event: (file, line, actions, detail keys).

    Found by reading the source: ``audit.record(<Action>, ..., details={...})`` and helpers
    called with an Action first and the details as keywords (``_record_decision``).
    """
    import ast
    from pathlib import Path

    import mcp_consent

    def actions_of(node: ast.expr, names: dict[str, ast.expr]) -> set[str]:
        if isinstance(node, ast.IfExp):
            return actions_of(node.body, names) | actions_of(node.orelse, names)
        if isinstance(node, ast.Attribute) and node.attr in AuditEvent.Action.names:
            return {AuditEvent.Action[node.attr].value}
        if isinstance(node, ast.Name) and node.id in names:  # action = (A if x else B)
            return actions_of(names.pop(node.id), names)
        return set()

    sites = []
    root = Path(mcp_consent.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        calls: list[tuple[ast.Call, dict[str, ast.expr]]] = []
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for function in functions:
            assigned = {
                target.id: statement.value
                for statement in ast.walk(function)
                if isinstance(statement, ast.Assign)
                for target in statement.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and node.args:
                    calls.append((node, assigned))
        for node, assigned in calls:
            is_record = isinstance(node.func, ast.Attribute) and node.func.attr == "record"
            actions = actions_of(node.args[0], dict(assigned))
            if not actions:
                if is_record and getattr(node.func.value, "id", "") == "audit":
                    sites.append((str(path.relative_to(root)), node.lineno, set(), set()))
                continue
            details = next((k.value for k in node.keywords if k.arg == "details"), None)
            if isinstance(details, ast.Dict):
                keys = {k.value for k in details.keys if isinstance(k, ast.Constant)}
            else:
                keys = {k.arg for k in node.keywords if k.arg and k.arg not in RECORD_KWARGS}
            sites.append((str(path.relative_to(root)), node.lineno, actions, keys))
    return sites


def test_every_audited_action_keeps_its_details() -> None:
    """Issue 9 item 5: no call site passes a detail its action does not list (it would be
    dropped, as ``oauth_tokens_revoked`` was); the one indirect call is the helper that
    forwards its keywords."""
    sites = _audited_call_sites()
    assert len(sites) >= 20, sites
    unresolved = [(path, line) for path, line, actions, _ in sites if not actions]
    assert [path for path, _ in unresolved] == ["flows/authorization.py"], unresolved
    recorded = set()
    for path, line, actions, keys in sites:
        for action in actions:
            recorded.add(action)
            missing = keys - audit.DETAILS[action]
            assert not missing, f"{path}:{line} records {missing} for {action}: list them"
    # Every action except the migration's seal is recorded somewhere in the code.
    assert recorded | {A.AUDIT_CHAIN_KEYED} == set(AuditEvent.Action.values)


@pytest.mark.parametrize("action", AuditEvent.Action.values)
def test_each_action_stores_every_listed_detail(action: str) -> None:
    details = {key: f"value of {key}" for key in audit.DETAILS[action]}
    event = audit.record(action, actor=audit.SYSTEM, client_id="c", details=details)
    assert AuditEvent.objects.get(pk=event.pk).details == details


def test_a_secret_passed_in_details_never_reaches_the_table(caplog) -> None:
    """Issue 8 (the scrubber mutation): a detail its action does not list is dropped and
    logged, whatever its name -- and the listed ones stay."""
    secret = "gho_this_is_an_upstream_access_token"
    audit.record(
        A.TOKEN_ISSUED,
        actor=audit.SYSTEM,
        client_id="c",
        details={"grant_type": "authorization_code", "access_token": secret, "extra": secret},
    )
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert secret not in dump
    assert AuditEvent.objects.get().details == {"grant_type": "authorization_code"}
    assert "'access_token' is not listed" in caplog.text
    assert secret not in caplog.text


def test_a_revocation_keeps_the_number_of_tokens_it_revoked() -> None:
    """Issue 9 item 5: the count of revoked OAuth tokens was dropped for naming 'token'."""
    from mcp_consent.flows import revocation
    from mcp_consent.models import Consent

    issue_token()
    revocation.revoke_consent(Consent.objects.get(), actor=audit.SYSTEM, reason="test")
    revoked = AuditEvent.objects.get(action=A.CONSENT_REVOKED)
    assert revoked.details["oauth_tokens_revoked"] == 1, revoked.details  # the refresh token
    assert revoked.details["reason"] == "test"
    assert revoked.details["scopes"]


# --- Mutation testing (issue 8): what the chain and its reports must keep doing --------------

# A row as this version hashes it, kept as data: a row written before an upgrade must
# verify after it with the same key. Any change to the hashed content (a field's name, the
# fields bound only in keyed rows: chain, version, key id), to its canonical JSON, or to
# how a key and its id are derived from AUDIT_KEYS (or from SECRET_KEY without them) would
# make `mcp_consent_verify_audit` call every existing row edited (SEC-06).
KNOWN_AUDIT_KEY = "mcp-consent known-answer audit key"
KNOWN_SECRET_KEY = "mcp-consent known-answer secret key"


def _known_row(key_id: str) -> AuditEvent:
    import datetime

    return AuditEvent(
        created_at=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        action=A.CONSENT_REVOKED,
        actor_type=AuditEvent.Actor.USER,
        actor_user_id=7,
        actor_label="alice",
        subject_user_id=8,
        client_id="client-kat",
        consent_id=9,
        ip_address="192.0.2.1",
        user_agent="KAT/1.0",
        details={"reason": "user", "scopes": ["items:read"]},
        previous_hash="ab" * 32,
        chain=3,
        version=AuditEvent.Version.HMAC_SHA256,
        key_id=key_id,
    )


def _with_audit_keys(settings, *keys: str) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "AUDIT_KEYS": list(keys)}


def test_sec06_a_row_hashed_by_this_version_keeps_its_hash(settings) -> None:
    """SEC-06: the known row's HMAC under a known key, and its key id, are those this
    version wrote; so is every field's part in it (one changed field, another hash)."""
    _with_audit_keys(settings, KNOWN_AUDIT_KEY)
    (key,) = audit.audit_keys()
    assert key.id == "5845451cb72aa2e6"
    row = _known_row(key.id)
    assert audit.event_hash(row) == (
        "a500f4914c1f3bbe42d9963a66e241ab1c363c18ed36a6ad40a22b74edab0a2c"
    )
    for name, other in [("chain", 4), ("version", 3), ("key_id", "other"), ("details", {})]:
        changed = _known_row(key.id)
        setattr(changed, name, other)
        assert audit._content(changed) != audit._content(row), name


def test_sec06_without_audit_keys_the_key_is_derived_from_secret_key(settings) -> None:
    """SEC-06: the DEBUG-only fallback (E012 refuses it elsewhere) keys the chain with a key
    derived from SECRET_KEY, stably across versions."""
    _with_audit_keys(settings)
    settings.SECRET_KEY = KNOWN_SECRET_KEY
    (key,) = audit.audit_keys()
    assert key.id == "fec94aa85e65421d"
    assert audit.event_hash(_known_row(key.id)) == (
        "c1a65bae6a8912c23bb81a99cd629c22301fc08a97067887ba7bd6e315a96773"
    )


def test_record_keeps_who_did_what_from_where(rf, django_user_model) -> None:
    """SM-04: an event names its actor (id and label), the person it concerns, the client,
    the consent, the address and the User-Agent (bounded to the columns), as recorded."""
    from mcp_consent.models import Consent

    issue_token()
    consent = Consent.objects.get()
    operator = django_user_model.objects.create_user("operator")
    # A label longer than the column (255) is bounded; the username column itself holds 150
    # on PostgreSQL, so the long name is set on the unsaved instance the request carries.
    operator.username = "o" * 300
    request = rf.get("/", HTTP_USER_AGENT="U" * 600, REMOTE_ADDR="192.0.2.7")
    request.user = operator
    actor = audit.actor_from(request, operator=True)
    event = audit.record(A.CONSENT_REVOKED, actor=actor, request=request, consent=consent)
    event.refresh_from_db()
    assert event.actor_type == AuditEvent.Actor.OPERATOR
    assert event.actor_user_id == operator.pk
    assert event.actor_label == "o" * 255
    assert event.subject_user_id == consent.user_id
    assert event.client_id == consent.client.application.client_id
    assert event.consent_id == consent.pk
    assert event.ip_address == "192.0.2.7"
    assert event.user_agent == "U" * 512
    assert event.version == AuditEvent.Version.HMAC_SHA256

    bare = audit.record(
        A.CONSENT_REVOKED,
        actor=audit.client_actor(None),
        request=rf.get("/"),
        consent=consent,
        subject_user_id=12345,
    )
    assert bare.subject_user_id == 12345  # an explicit subject is kept
    assert bare.user_agent == ""
    assert bare.actor_type == AuditEvent.Actor.CLIENT
    assert bare.actor_label == ""
    nothing = audit.record(A.CLIENT_UPDATED, actor=audit.actor_from(None), client_id="c" * 300)
    assert nothing.client_id == "c" * 255
    assert nothing.actor_type == AuditEvent.Actor.ANONYMOUS
    assert nothing.user_agent == ""
    assert audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM).client_id == ""
    named = audit.client_actor(consent.client)
    assert named.label == consent.client.application.client_id


def test_record_stores_a_detail_that_is_not_json_as_text() -> None:
    import datetime

    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    event = audit.record(A.CLIENT_DISABLED, actor=audit.SYSTEM, details={"reason": when})
    event.refresh_from_db()
    assert event.details == {"reason": str(when)}


def test_scrub_drops_each_unlisted_detail_and_keeps_the_listed_ones_after_it(caplog) -> None:
    """Issue 9 item 5: an unlisted key is dropped and logged, the listed keys after it kept;
    an action with no list keeps nothing (and does not fail)."""
    details = {"access_token": "s3cr3t", "reason": "test", "scopes": "a"}
    assert audit._scrub(A.CONSENT_REVOKED, details) == {"reason": "test", "scopes": "a"}
    assert (
        f"audit detail 'access_token' is not listed for {A.CONSENT_REVOKED!r} in audit.DETAILS: "
        "dropped" in caplog.messages
    )
    assert audit._scrub("not_an_action", {"reason": "x"}) == {}


def test_a_fresh_connection_chooses_its_chain() -> None:
    """Issue 11: the first event on a connection (a new worker thread) picks its chain."""
    if hasattr(connection, audit._STICKY):
        delattr(connection, audit._STICKY)
    event = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="first")
    assert event.chain == audit.chain_of("first")


def _client_ids_on_two_chains() -> tuple[str, str]:
    first = "client-a"
    other = next(
        f"client-{i}" for i in range(100) if audit.chain_of(f"client-{i}") != audit.chain_of(first)
    )
    return first, other


@pytest.mark.django_db(transaction=True)
def test_issue11_one_transaction_writes_one_chain_the_next_chooses_afresh() -> None:
    """Issue 11: a transaction's events all go to its first event's chain (one head lock);
    the next transaction chooses by its own key; events without a client by person and
    address."""
    from django.db import transaction

    first, other = _client_ids_on_two_chains()
    with transaction.atomic():
        a = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=first)
        b = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=other)
    assert b.chain == a.chain == audit.chain_of(first)
    c = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=other)
    assert c.chain == audit.chain_of(other)
    for subject, ip in [(5, "192.0.2.1"), (None, None), (5, None), (None, "192.0.2.1")]:
        event = audit.record(A.SIGNED_IN, actor=audit.SYSTEM, subject_user_id=subject)
        if ip is None:
            expected = audit.chain_of(f"user:{subject or ''}:")
        else:
            from django.test import RequestFactory

            request = RequestFactory().get("/", REMOTE_ADDR=ip)
            event = audit.record(
                A.SIGNED_IN, actor=audit.SYSTEM, subject_user_id=subject, request=request
            )
            expected = audit.chain_of(f"user:{subject or ''}:{ip}")
        assert event.chain == expected, (subject, ip)
    audit.verify()


def test_anchor_text_round_trips_and_refuses_what_it_did_not_print() -> None:
    """SEC-06: an anchor names every chain's length; anything else is refused, plainly."""
    digest = "0" * 63 + "f"
    anchor = audit.Anchor({3: 1, 0: 2}, digest)
    assert str(anchor) == f"mcpa1:0.2,3.1:{digest}"
    assert audit.Anchor.parse(str(anchor)) == anchor
    for text in [f"other:0.2:{digest}", "mcpa1:0.2:" + "g" * 64, f"mcpa1:0.2:{digest}0"]:
        with pytest.raises(audit.AnchorError) as refused:
            audit.Anchor.parse(text)
        assert str(refused.value) == "not an anchor printed by mcp_consent_verify_audit --anchor"
    expected = hashlib.sha256(b"0." + b"a" * 64 + b"\n3." + b"b" * 64).hexdigest()
    assert audit.Anchor.digest_of({3: "b" * 64, 0: "a" * 64}) == expected


def test_verify_reports_what_it_checked() -> None:
    """SEC-06: an intact trail reports every row checked, no problem, and its anchor."""
    events = _events_in_one_chain(3)
    report = audit.verify()
    assert report.problem == ""
    assert report.intact
    assert report.checked == 3
    assert report.first_broken is None
    assert report.anchor is not None
    assert report.anchor.lengths == {events[0].chain: 3}


def test_verify_names_the_broken_row_its_chain_and_the_problem() -> None:
    """SEC-06: each failure names the row, the chain, and what was done to it."""
    events = _events_in_one_chain(4)
    chain = events[0].chain
    _rewrite(events[2].pk, actor_label="someone else")
    report = audit.verify()
    assert report.problem == "content does not match its hash (the row was edited)"
    assert report.first_broken == events[2]
    assert report.chain == chain
    assert report.checked == 2

    _rewrite(events[2].pk, actor_label=events[2].actor_label)
    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [events[1].pk])
    report = audit.verify()
    assert report.problem == (
        "does not link to the row before it (a row was removed or inserted, or rows reordered)"
    )
    assert report.first_broken == events[2]

    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id > %s", [events[0].pk])
    report = audit.verify()
    assert report.problem == "is not the recorded end of the chain (rows after it were removed)"
    assert report.first_broken == events[0]
    assert report.chain == chain
    assert report.checked == 1


def test_verify_refuses_rows_whose_chain_head_was_removed() -> None:
    """SEC-06: deleting a chain's head row (to hide that rows were cut) does not make the
    chain disappear from verification."""
    events = _events_in_one_chain(2)
    AuditChainHead.objects.filter(chain=events[0].chain).delete()
    report = audit.verify()
    assert report.problem == "is not the recorded end of the chain (rows after it were removed)"
    assert report.first_broken == events[1]


def test_verify_names_a_row_keyed_with_a_key_no_longer_configured(settings) -> None:
    events = _events_in_one_chain(2)
    _with_audit_keys(settings, KNOWN_AUDIT_KEY)
    report = audit.verify()
    assert report.problem == f"was keyed with audit key {events[0].key_id!r}, not in AUDIT_KEYS"
    assert report.first_broken == events[0]


def _downgrade(events: list[AuditEvent], count: int) -> None:
    """Mark the first ``count`` rows as unkeyed (version 1) and rehash the chain: unkeyed
    SHA-256 for those, the real key after them (an intruder who holds the key)."""
    key = audit.audit_keys()[0]
    old = {e.pk for e in events[:count]}
    for pk in old:
        _rewrite(pk, version=AuditEvent.Version.SHA256)

    def hasher(event: AuditEvent) -> str:
        if event.pk in old:
            event.version = AuditEvent.Version.SHA256
            return hashlib.sha256(audit._content(event).encode()).hexdigest()
        return audit.event_hash(event, [key]) or ""

    _rehash_chain(events[0].chain, hasher=hasher)


def test_sec06_a_row_made_to_look_old_at_the_start_of_another_chain_is_refused() -> None:
    """SEC-06: unkeyed rows exist only at the start of chain 0; one at the start of any
    other chain, followed by keyed rows, is a forgery that escapes the key."""
    cid = next(f"c{i}" for i in range(100) if audit.chain_of(f"c{i}") != 0)
    events = [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=cid)]
    events += _events_in_one_chain(2)
    assert events[0].chain != 0
    _downgrade(events, 1)
    report = audit.verify()
    assert report.problem == "is an unkeyed row after keyed ones (only keyed are written)"
    assert report.first_broken == events[0]


def test_sec06_a_chain_of_only_unkeyed_rows_is_refused_at_its_last_row() -> None:
    """SEC-06: chain 0 rewritten wholly unkeyed (no keyed seal after it) is refused, naming
    its last row, and the unkeyed rows are counted."""
    cid = next(f"c{i}" for i in range(1000) if audit.chain_of(f"c{i}") == 0)
    events = [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=cid)]
    events += _events_in_one_chain(2)
    assert events[0].chain == 0
    _downgrade(events, 3)
    report = audit.verify()
    assert report.problem == "ends with unkeyed rows that no keyed row seals (rewritten unkeyed)"
    assert report.first_broken == events[2]
    assert report.legacy == 3
    assert report.checked == 3


@pytest.mark.django_db(transaction=True)
def test_verify_against_an_anchor_still_walks_the_chains_it_does_not_name() -> None:
    """SEC-06: a chain that began after the anchor was taken is verified too, and a failure
    reports the rows checked in every chain before it."""
    first, other = _client_ids_on_two_chains()
    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=first)
    audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=first)
    anchor = audit.verify().anchor
    later = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=other)
    assert audit.verify(anchor).intact
    _rewrite(later.pk, actor_label="someone else")
    report = audit.verify(anchor)
    assert report.problem == "content does not match its hash (the row was edited)"
    assert report.chain == later.chain
    before = 2 if audit.chain_of(first) < later.chain else 0
    assert report.checked == before


def test_verify_against_an_anchor_names_the_chain_that_got_shorter() -> None:
    events = _events_in_one_chain(3)
    anchor = audit.verify().anchor
    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [events[-1].pk])
    AuditChainHead.objects.filter(chain=events[0].chain).update(last_hash=events[1].hash)
    report = audit.verify(anchor)
    assert report.problem == f"chain {events[0].chain} is shorter than the anchor"
    assert report.chain == events[0].chain
    assert report.checked == 2
    assert report.legacy == 0
    assert report.first_broken is None
    rewritten = audit.Anchor(anchor.lengths, "0" * 64)
    events.append(audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="c"))
    report = audit.verify(rewritten)
    assert report.problem == "the chain does not match the anchor (events up to it were rewritten)"
    assert report.checked == 3
    assert report.legacy == 0


@pytest.mark.django_db(transaction=True)
def test_verify_counts_every_chain_before_the_broken_one_and_the_unkeyed_rows() -> None:
    """SEC-06: a failure report counts the rows checked and the unkeyed (pre-SEC-06) rows
    of every chain walked before it, whichever way the later chain was tampered with."""
    zero = next(f"c{i}" for i in range(1000) if audit.chain_of(f"c{i}") == 0)
    later = next(f"c{i}" for i in range(1000) if audit.chain_of(f"c{i}") > 0)
    old = [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=zero) for _ in range(3)]
    _downgrade(old, 2)  # two rows from before the keyed chain, sealed by a keyed one
    assert audit.verify().legacy == 2
    rows = [audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=later) for _ in range(2)]
    anchor = audit.verify().anchor

    _rewrite(rows[0].pk, actor_label="someone else")
    edited = audit.verify()
    assert edited.chain == rows[0].chain
    assert edited.checked == 3
    assert edited.legacy == 2
    _rewrite(rows[0].pk, actor_label=rows[0].actor_label)

    rewritten = audit.verify(audit.Anchor(anchor.lengths, "0" * 64))
    assert rewritten.problem.startswith("the chain does not match the anchor")
    assert rewritten.legacy == 2

    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [rows[1].pk])
    cut = audit.verify()
    assert cut.problem.startswith("is not the recorded end of the chain")
    assert cut.checked == 4
    assert cut.legacy == 2
