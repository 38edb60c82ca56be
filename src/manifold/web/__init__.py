"""The gateway's browser pages: sign-in (API key or the IdP), connecting OAuth upstreams, connections."""
