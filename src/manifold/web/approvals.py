"""The approval gate's page (docs/approvals.md): one held call, at the address the caller was given.

    GET  /approvals        the requests waiting for the signed-in person's decision
    GET  /approvals/{id}   the request: who, which tool, the arguments (redacted), its status
    POST /approvals/{id}   an approver's decision (`decision=approve|deny`, CSRF-protected) → the page again

Who sees what: an approver (selected by the request's `approvers`) sees the request and, while it is pending,
the Approve and Deny buttons; the caller sees its status (and the buttons only with `self_approval`); anyone
else gets 403. Signing in is the gateway's own (sign_in.py); each decision is audited with the approver
(policy/approvals.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from starlette.responses import Response

from manifold.identity.api_keys import KeyRepository
from manifold.identity.directory import Snapshot
from manifold.policy.approvals import Approval, Approvals, Status, may_approve
from manifold.principal import Credential, CredentialKind, Principal
from manifold.web import csrf
from manifold.web.page_request import PageRequest, login_redirect, viewer
from manifold.web.pages import Viewer, e, layout
from manifold.web.responses import page, problem
from manifold.web.session import SessionCookies
from manifold.web.session_principal import session_principal

log = logging.getLogger(__name__)
PAGE = "/approvals/{approval_id}"
LIST = "/approvals"


def sign_in_credential(method: str) -> Credential:
    """What the approver proved who they are with (`WebSession.method`), as their decision's audit row names it."""
    kind, _, ref = method.partition(":")
    if kind == "api_key":
        return Credential(CredentialKind.API_KEY, ref or None)
    if kind == "idp":
        return Credential(CredentialKind.IDP_JWT, ref or None)
    return Credential(CredentialKind.NONE)


_STATUS_TEXT = {
    Status.PENDING: "Waiting for an approver",
    Status.APPROVED: "Approved",
    Status.DENIED: "Denied",
    Status.EXPIRED: "Expired: nobody decided in time",
    Status.USED: "Approved, and the call has run",
    Status.CLOSED: "Finished",  # said as what it was: _status_text
}


def _status_text(approval: Approval, status: Status) -> str:
    """A closed request (its caller was told the outcome) as what it was: the table keeps only "closed", and the
    page said "Finished" for a denial, which the approver and the caller should still read as one (review)."""
    if status is not Status.CLOSED:
        return _STATUS_TEXT[status]
    if approval.decided_by is None:
        return "Expired: nobody decided in time (the caller was told)"
    if approval.valid_until is not None:
        if approval.valid_seconds > 0:  # calls may have run during it (review)
            return f"Approved for {approval.valid_seconds:g} s; that time is over (the caller was told)"
        return "Approved; the call did not run while the approval held (the caller was told)"
    return "Denied (the caller was told)"


class ApprovalPages:
    def __init__(
        self, cookies: SessionCookies, approvals: Approvals, directory: Callable[[], Snapshot], keys: KeyRepository
    ) -> None:
        self.cookies = cookies
        self.approvals = approvals
        self.directory = directory
        self.keys = keys

    async def waiting(self, request: PageRequest) -> Response:
        session = request.session
        if session is None:
            return login_redirect(request)
        who = viewer(self.cookies.signer, session)
        principal = await session_principal(session, self.directory, self.keys, sign_in_credential(session.method))
        rows = await self.approvals.waiting_for(principal) if principal is not None else []
        if not rows:
            body = "<p>No request waits for your decision.</p>"
        else:
            items = "".join(
                f'<li><a href="/approvals/{e(a.id)}">{e(a.tool)} on {e(a.server)}</a> — asked by {e(a.principal)} '
                f"at {e(_when(a.created_at))}, expires {e(_when(a.expires_at))}</li>"
                for a in rows
            )
            body = f'<p class="lead">Calls waiting for your decision:</p><ul class="list">{items}</ul>'
        return page(200, layout("Approval requests", body, who))

    async def approval(self, request: PageRequest) -> Response:
        session = request.session
        if session is None:
            if request.posted:
                return problem(401, "Sign in first", "Your sign-in ended before you decided.")
            return login_redirect(request)
        who = viewer(self.cookies.signer, session)
        approval = await self.approvals.get(request.path_params["approval_id"])
        principal = await session_principal(session, self.directory, self.keys, sign_in_credential(session.method))
        if approval is None or principal is None:
            return problem(404, "Not found", "There is no such approval request (or it was cleaned up).", viewer=who)
        approver = may_approve(approval, principal)
        if not approver and principal.id != approval.principal:
            log.warning("approval %s: %s is not an approver", approval.id[:8], principal.id)
            message = f"Only an approver ({approval.approvers}) can see this request."
            return problem(403, "Not allowed", message, viewer=who)
        action = f"approval:{approval.id}"
        notice: str | None = None
        status = 200
        if request.posted:
            if not csrf.valid(self.cookies.signer, session.sid, action, request.form.get("csrf")):
                return problem(403, "Not allowed", "The form was not from this session.", viewer=who)
            if not approver:
                return problem(403, "Not allowed", "You may not decide your own request.", viewer=who)
            decision = request.form.get("decision")
            if decision not in ("approve", "deny"):
                return problem(400, "Not understood", "Choose Approve or Deny.", viewer=who)
            decided = await self.approvals.decide(approval, principal, decision == "approve")
            if decided is None:
                approval = await self.approvals.get(approval.id) or approval
                notice = "This request is no longer waiting for a decision; nothing was changed."
                status = 409
            else:
                approval = decided
                log.info("approval %s %sd by %s", approval.id[:8], decision, principal.id)
                notice = f"You {'approved' if decision == 'approve' else 'denied'} this call."
        token = csrf.token(self.cookies.signer, session.sid, action) if approver else None
        return page(status, _page(approval, principal, who, token, notice))


def _when(at: float | None) -> str:
    return "—" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page(approval: Approval, principal: Principal, who: Viewer, csrf_token: str | None, notice: str | None) -> str:
    now = time.time()
    status = approval.current_status(now)
    arguments = orjson.dumps(dict(approval.arguments), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    facts = [
        ("Requested by", approval.principal),
        ("Tool", f"{approval.tool} on server {approval.server} (upstream {approval.upstream})"),
        ("Approvers", approval.approvers),
        ("Requested at", _when(approval.created_at)),
        ("Status", _status_text(approval, status)),
    ]
    if status is Status.PENDING:
        facts.append(("Expires at", _when(approval.expires_at)))
    if approval.decided_by is not None:
        facts.append(("Decided by", f"{approval.decided_by} at {_when(approval.decided_at)}"))
    body = ""
    if notice is not None:
        kind = "message-ok" if status in (Status.APPROVED, Status.DENIED) else "message-error"
        role = "status" if kind == "message-ok" else "alert"
        body += f'<p class="message {kind}" role="{role}">{e(notice)}</p>'
    body += '<dl class="facts">' + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in facts) + "</dl>"
    body += (
        '<h2>Arguments</h2><p class="muted">Values under names that look like secrets are hidden.</p>'
        f'<pre class="snippet" tabindex="0" aria-label="Arguments">{e(arguments)}</pre>'
    )
    if status is Status.PENDING and csrf_token is not None:
        body += (
            f'<form method="post" action="/approvals/{e(approval.id)}" class="actions">'
            f'<input type="hidden" name="csrf" value="{e(csrf_token)}">'
            '<button class="button button-primary" type="submit" name="decision" value="approve">Approve</button>'
            '<button class="button button-secondary button-danger" type="submit" name="decision" value="deny">'
            "Deny</button></form>"
        )
    elif status is Status.PENDING:
        body += (
            f"<p>An approver ({e(approval.approvers)}) must approve this call. Send them this page's address; "
            "once it is approved, call the tool again from your MCP client.</p>"
        )
    elif principal.id == approval.principal and status is Status.APPROVED:
        body += "<p>Go back to your MCP client and call the tool again: it runs once.</p>"
    return layout("Approval request", body, who)
