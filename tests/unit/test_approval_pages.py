"""/approvals/{id} (web/approvals.py) in-process, over the web app alone: the answers a browser rarely sees —
a form from another session, a request decided already, a decision the caller may not take. The person's
own flows, in Chromium: tests/browser/test_approvals.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx2
import pytest

from manifold.audit import AuditEvent, Outcome
from manifold.config.models import GatewayConfig, GatewaySettings, IdentitySettings
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.outbound.oauth import ConnectLinks, OAuthFlows, Vault
from manifold.policy.approval_store import Approval, ApprovalStore, NewApproval, Status
from manifold.policy.approvals import Approvals
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from manifold.web.routes import WebApp

pytestmark = pytest.mark.anyio
BASE = "http://127.0.0.1:8470"
TEAMS = {"alice@corp.com": ["eng", "sre"], "sam@corp.com": ["sre"]}  # alice: an approver, calling herself


@dataclass
class Site:
    approvals: Approvals
    tokens: dict[str, str]
    transport: httpx2.ASGITransport
    audited: list[AuditEvent]
    key_ids: dict[str, str]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="test")
    secrets = SecretStore(engine, cipher)
    flows = OAuthFlows(engine, cipher, secret=secrets.lookup)
    keys = KeyRepository(engine)
    directory = Directory(engine, GatewayConfig.model_validate({"users": {u: {"teams": t} for u, t in TEAMS.items()}}))
    await directory.load()
    authenticator = Authenticator(keys, directory, None, cache_seconds=0)
    made = {user: await keys.create(OwnerKind.USER, user, "laptop") for user in TEAMS}
    tokens = {user: token for user, (_, token) in made.items()}
    key_ids = {user: record.id for user, (record, _) in made.items()}
    audited: list[AuditEvent] = []
    approvals = Approvals(ApprovalStore(engine), audited.append)

    async def sync() -> None:
        return None

    web = WebApp(
        settings=GatewaySettings(),
        identity=IdentitySettings(),
        keys=keys,
        authenticator=authenticator,
        engine=engine,
        cipher=cipher,
        secrets=secrets,
        links=ConnectLinks.from_cipher(cipher),
        flows=flows,
        vault=Vault(engine, cipher),
        upstream_config=lambda _uid: None,
        sync=sync,
        approvals=approvals,
    )
    yield Site(approvals, tokens, httpx2.ASGITransport(app=web), audited, key_ids)  # pyright: ignore[reportArgumentType]
    await flows.aclose()
    await engine.dispose()


def hidden_fields(page: str) -> dict[str, str]:
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {unescape(name): unescape(value) for name, value in found}


@asynccontextmanager
async def browser(site: Site, user: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client signed in as `user` (the sign-in form, as a browser fills it)."""
    async with httpx2.AsyncClient(transport=site.transport, base_url=BASE) as http:
        form = await http.get("/login")
        fields = {**hidden_fields(form.text), "key": site.tokens[user]}
        signed = await http.post("/login", data=fields, headers={"Origin": BASE})
        assert signed.status_code == 303, signed.text
        yield http


async def request_by(site: Site, principal_id: str) -> Approval:
    return await site.approvals.store.create(
        NewApproval(
            principal=principal_id,
            server="github",
            member="github",
            upstream="github",
            tool="delete_repo",
            arguments={"repo": "x"},
            arguments_hash="0" * 64,
            grant_label="manifold.yaml grants[0]",
            approvers="team:sre",
            self_approval=False,
            valid_seconds=0,
            timeout_seconds=600,
        )
    )


async def decide(
    http: httpx2.AsyncClient, approval: Approval, decision: str, csrf: str | None = None
) -> httpx2.Response:
    page = await http.get(f"/approvals/{approval.id}")
    token = csrf if csrf is not None else hidden_fields(page.text).get("csrf", "")
    return await http.post(
        f"/approvals/{approval.id}", data={"csrf": token, "decision": decision}, headers={"Origin": BASE}
    )


async def test_a_form_from_another_session_decides_nothing(site: Site) -> None:
    approval = await request_by(site, "user:bob@corp.com")
    async with browser(site, "sam@corp.com") as sam:
        refused = await decide(sam, approval, "approve", csrf="forged")
        assert refused.status_code == 403 and "not from this session" in refused.text
        cross_site = await sam.post(
            f"/approvals/{approval.id}", data={"decision": "approve"}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
    still = await site.approvals.get(approval.id)
    assert still is not None and still.status is Status.PENDING


async def test_a_request_is_decided_once(site: Site) -> None:
    approval = await request_by(site, "user:bob@corp.com")
    async with browser(site, "sam@corp.com") as sam:
        page = await sam.get(f"/approvals/{approval.id}")
        token = hidden_fields(page.text)["csrf"]
        first = await decide(sam, approval, "deny", csrf=token)
        assert first.status_code == 200 and "You denied this call." in first.text
        second = await decide(sam, approval, "approve", csrf=token)  # the same form, pressed again
        assert second.status_code == 409 and "no longer waiting" in second.text
        bad = await decide(sam, approval, "maybe", csrf=token)
        assert bad.status_code == 400
    decided = await site.approvals.get(approval.id)
    assert decided is not None and decided.status is Status.DENIED and decided.decided_by == "user:sam@corp.com"
    (row,) = site.audited  # the decision, with the approver and the key they signed in with
    assert (row.method, row.outcome, row.principal) == ("approval", Outcome.DENIED, "user:sam@corp.com")
    assert row.credential == f"api_key:{site.key_ids['sam@corp.com']}"


async def test_an_approver_cannot_decide_their_own_request_without_self_approval(site: Site) -> None:
    approval = await request_by(site, "user:alice@corp.com")
    async with browser(site, "alice@corp.com") as alice:
        page = await alice.get(f"/approvals/{approval.id}")
        assert page.status_code == 200 and "Approve</button>" not in page.text
        refused = await decide(alice, approval, "approve", csrf="")
        assert refused.status_code == 403
    still = await site.approvals.get(approval.id)
    assert still is not None and still.status is Status.PENDING


async def test_no_such_request_and_not_signed_in(site: Site) -> None:
    async with httpx2.AsyncClient(transport=site.transport, base_url=BASE) as anonymous:
        away = await anonymous.get("/approvals/nope")
        assert away.status_code == 303 and away.headers["location"].startswith("/login?next=")
    async with browser(site, "sam@corp.com") as sam:
        missing = await sam.get("/approvals/nope")
        assert missing.status_code == 404


async def test_an_approver_lists_the_requests_they_may_decide(site: Site) -> None:
    bobs = await request_by(site, "user:bob@corp.com")
    alices = await request_by(site, "user:alice@corp.com")
    async with browser(site, "sam@corp.com") as sam:
        listed = await sam.get("/approvals")
    assert listed.status_code == 200
    assert f'href="/approvals/{bobs.id}"' in listed.text and f'href="/approvals/{alices.id}"' in listed.text
    async with browser(site, "alice@corp.com") as alice:  # an approver too, but not of her own request
        hers = await alice.get("/approvals")
    assert f'href="/approvals/{bobs.id}"' in hers.text and alices.id not in hers.text


async def test_a_key_restricted_to_some_servers_decides_no_request(site: Site) -> None:
    """Was (review): a key of an approver restricted with `--servers docs` (an agent's key) signed in on the web
    and approved a held call on another server. A restricted key is no approver, as it is no administrator."""
    repo = KeyRepository(site.approvals.store.engine)
    _, token = await repo.create(OwnerKind.USER, "sam@corp.com", "agent", servers=["docs"])
    approval = await request_by(site, "user:bob@corp.com")
    async with httpx2.AsyncClient(transport=site.transport, base_url=BASE) as http:
        form = await http.get("/login")
        signed = await http.post("/login", data={**hidden_fields(form.text), "key": token}, headers={"Origin": BASE})
        assert signed.status_code == 303, signed.text
        assert (await http.get(f"/approvals/{approval.id}")).status_code == 403
        await decide(http, approval, "approve")
        assert "No request waits for your decision" in (await http.get("/approvals")).text
    decided = await site.approvals.get(approval.id)
    assert decided is not None and decided.status is Status.PENDING


@pytest.mark.parametrize(
    ("decided_by", "valid_seconds", "valid_until", "said"),
    [
        (None, 0.0, None, "Expired: nobody decided in time (the caller was told)"),
        ("user:sam@corp.com", 0.0, None, "Denied (the caller was told)"),
        (
            "user:sam@corp.com",
            0.0,
            2000.0,
            "Approved; the call did not run while the approval held (the caller was told)",
        ),
        ("user:sam@corp.com", 600.0, 2000.0, "Approved for 600 s; that time is over (the caller was told)"),
    ],
)
def test_a_closed_request_says_what_it_was(
    decided_by: str | None, valid_seconds: float, valid_until: float | None, said: str
) -> None:
    """Was (console review): "Finished" for a denial and an expiry alike, once the caller had been told."""
    from manifold.policy.approval_store import Approval as Stored
    from manifold.policy.approvals import Status
    from manifold.web.approvals import _status_text

    closed = Stored(
        id="a1", principal="user:alice@corp.com", server="s", member="m", upstream="u", tool="t", arguments={},
        arguments_hash="h", grant_label="g", approvers="team:sre", self_approval=False, valid_seconds=valid_seconds,
        status=Status.CLOSED, created_at=1000.0, expires_at=1600.0, decided_by=decided_by,
        decided_at=None if decided_by is None else 1100.0, valid_until=valid_until,
    )  # fmt: skip
    assert _status_text(closed, Status.CLOSED) == said
