"""The consent page of the gateway's authorization server: which client, where it will send the person
back (the redirect URI's host), which server it asks for (and which it was allowed before). Markup only,
every value escaped; the frame and the security headers (no framing: `frame-ancestors 'none'`) are the web
pages' own."""

from __future__ import annotations

from manifold.web.pages import Viewer, e, layout


def consent(
    *,
    viewer: Viewer,
    client_name: str,
    client_id: str,
    source: str,
    redirect_host: str,
    server_id: str,
    resource: str,
    fields: dict[str, str],
    csrf: str,
    allowed: tuple[str, ...] = (),
) -> str:
    """`allowed`: the servers this person allowed the client before (this page asks for one more)."""
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in sorted(fields.items()))
    known = {
        "configured": "registered by the gateway's administrators",
        "registered": "registered itself with this gateway",
        "metadata-document": "described by its own metadata document",
    }.get(source, source)
    also = [r for r in allowed if r != resource]
    before = (
        f"<div><dt>Allowed before</dt><dd>{' '.join(f'<code>{e(r)}</code>' for r in also)}</dd></div>" if also else ""
    )
    body = (
        f'<p class="lead"><strong>{e(client_name)}</strong> wants to use the MCP server '
        f"<strong>{e(server_id)}</strong> as you, with your access: what your grants allow, your connected "
        "accounts.</p>"
        '<dl class="facts">'
        f"<div><dt>Application</dt><dd>{e(client_name)} <small>({e(known)})</small></dd></div>"
        f"<div><dt>Client id</dt><dd><code>{e(client_id)}</code></dd></div>"
        f"<div><dt>Sends you back to</dt><dd>{e(redirect_host)}</dd></div>"
        f"<div><dt>Asks for</dt><dd>{e(server_id)} <small>(<code>{e(resource)}</code>)</small></dd></div>"
        f"{before}"
        "</dl>"
        f"<p>Allow it only if you are setting up <strong>{e(client_name)}</strong> yourself right now and it runs "
        f"at <strong>{e(redirect_host)}</strong>. You can revoke it at any time under "
        '<a href="/connections">your connections</a>.</p>'
        f'<form method="post" action="/authorize">{hidden}<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<div class="actions">'
        '<button class="button button-primary" type="submit" name="decision" value="allow">Allow</button>'
        '<button class="button button-secondary" type="submit" name="decision" value="deny">Deny</button>'
        "</div></form>"
    )
    return layout(f"Allow {client_name}?", body, viewer)


def refused(*, title: str, error: str, description: str, viewer: Viewer | None = None) -> str:
    """An authorization request that cannot go back to the client (no client, no registered redirect URI)."""
    body = (
        f'<p class="message message-error" role="alert">{e(description)}</p>'
        f"<p>Error: <code>{e(error)}</code>. Nothing was sent to the application.</p>"
    )
    return layout(title, body, viewer)
