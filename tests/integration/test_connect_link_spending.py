"""A connect link makes one connection, and only a connection spends it (outbound/oauth/links.py, client.py):
attempts that fail leave it usable; of two attempts started from one link, only the first to store its tokens
connects. Against the real authorization server and protected upstream of tests/integration/test_oauth_flow.py."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from manifold.outbound.oauth import AuthorizationDenied, OAuthError
from manifold.outbound.oauth.links import is_spent, link_digest
from tests.idp import Idp
from tests.integration import test_oauth_flow as oauth_flow
from tests.integration.test_oauth_flow import ALICE, DISCOVER, REDIRECT, UPSTREAM, Gateway, Upstream

pytestmark = pytest.mark.anyio

# The fixtures of the OAuth flow tests: a fresh database per test, one provider and upstream per module.
gw, idp, upstream = oauth_flow.gw, oauth_flow.idp, oauth_flow.upstream


async def test_only_stored_tokens_spend_a_link_and_a_link_connects_once(
    gw: Gateway, idp: Idp, upstream: Upstream
) -> None:
    link = gw.links.mint(ALICE.id, UPSTREAM, "http://127.0.0.1:8470")
    t = parse_qs(urlsplit(link).query)["t"][0]
    engine = gw.flows._engine

    # Declined at the authorization server: nothing stored, the link still usable.
    declined = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT, link_digest=link_digest(t))
    state = parse_qs(urlsplit(declined).query)["state"][0]
    with pytest.raises(AuthorizationDenied):
        await gw.flows.complete(state, None, idp.issuer, "access_denied", ALICE.id)
    assert not await is_spent(engine, t)

    # Two attempts from the one link (two tabs): the first to come back connects and spends it.
    first = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT, link_digest=link_digest(t))
    second = await gw.flows.start(ALICE.id, UPSTREAM, DISCOVER, upstream.url, REDIRECT, link_digest=link_digest(t))
    assert not await is_spent(engine, t)  # starting spends nothing
    back_first = await idp.authorize(first, login=ALICE.name)
    back_second = await idp.authorize(second, login=ALICE.name)
    connected = await gw.flows.complete(back_first["state"], back_first["code"], back_first["iss"], None, ALICE.id)
    assert await is_spent(engine, t)
    with pytest.raises(OAuthError, match="already used to connect"):
        await gw.flows.complete(back_second["state"], back_second["code"], back_second["iss"], None, ALICE.id)
    stored = await gw.vault.get(ALICE.id, UPSTREAM)
    assert stored is not None and stored.access_token == connected.access_token  # the second stored nothing
