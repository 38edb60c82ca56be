"""The gateway as the OAuth 2.1 authorization server of its own MCP endpoints (docs/gateway-oauth.md).

    clients.py   who may ask: configured clients, dynamically registered ones (RFC 7591), Client ID
                 Metadata Documents (a URL as client_id, fetched with the outbound SSRF guard)
    store.py     codes, grants (refresh-token families), refresh tokens, consents in the database
    server.py    Authlib's AuthorizationServer with its grants, endpoints and JWT access tokens (RFC 9068)
    consent.py   the consent page's markup
    routes.py    the endpoints, as one ASGI app (metadata, JWKS, /authorize, /token, /register, /revoke)

Access tokens are checked by identity/gateway_tokens.py (the authenticator), not here.
"""
