"""The consent page of the gateway's authorization server: which client, where it will send the person
back (the redirect URI's host), which server it asks for. Markup only, every value escaped; the frame and
the security headers (no framing: `frame-ancestors 'none'`) are the web pages' own."""

from __future__ import annotations

from manifold.web.pages import Viewer, e
from manifold.web.pages import _layout as layout  # pyright: ignore[reportPrivateUsage] — the pages' one frame


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
) -> str:
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in sorted(fields.items()))
    known = {
        "configured": "registered by the gateway's administrators",
        "registered": "registered itself with this gateway",
        "metadata-document": "described by its own metadata document",
    }.get(source, source)
    body = (
        f"<p><strong>{e(client_name)}</strong> wants to use the MCP server <strong>{e(server_id)}</strong> "
        "as you, with your access: what your grants allow, your connected accounts.</p>"
        '<dl class="facts">'
        f"<dt>Application</dt><dd>{e(client_name)} <small>({e(known)})</small></dd>"
        f"<dt>Client id</dt><dd><code>{e(client_id)}</code></dd>"
        f"<dt>Sends you back to</dt><dd><strong>{e(redirect_host)}</strong></dd>"
        f"<dt>Server</dt><dd><code>{e(resource)}</code></dd>"
        "</dl>"
        "<p>Allow only an application you are setting up yourself right now. You can revoke it later.</p>"
        f'<form method="post" action="/authorize">{hidden}<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<button class="button" type="submit" name="decision" value="allow">Allow</button> '
        '<button class="button button-secondary" type="submit" name="decision" value="deny">Deny</button>'
        "</form>"
    )
    return layout(f"Allow {client_name}?", body, viewer)


def refused(*, title: str, error: str, description: str, viewer: Viewer | None = None) -> str:
    """An authorization request that cannot go back to the client (no client, no registered redirect URI)."""
    body = (
        f'<p class="message message-error" role="alert">{e(description)}</p>'
        f"<p>Error: <code>{e(error)}</code>. Nothing was sent to the application.</p>"
    )
    return layout(title, body, viewer)
