"""OAuth refreshes counted in the metrics: the broker's refresh of a real IdP's token (tests/idp.py, the
fixtures of test_oauth_flow.py) reaches `manifold_oauth_refreshes_total`."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from manifold.outbound.oauth import OAuthBroker
from manifold.outbound.resolver import CallContext
from manifold.telemetry.metrics import Metrics
from tests.integration.test_oauth_flow import (  # noqa: F401 — fixtures
    ALICE,
    GATEWAY,
    UPSTREAM,
    Gateway,
    configured,
    gw,
    idp,
    make_due,
    upstream,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def refreshes(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["upstream"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == "manifold_oauth_refreshes_total"
    }


async def test_a_refresh_is_counted(gw: Gateway, idp, upstream) -> None:  # noqa: F811
    metrics = Metrics()
    broker = OAuthBroker(
        gw.vault, gw.links, gw.flows, lambda: GATEWAY, on_refresh=lambda u, ok: metrics.oauth_refresh(u, ok=ok)
    )
    config = configured(idp, refresh_margin_seconds=60)
    await gw.connect(idp, ALICE, config, upstream.url)
    await make_due(gw, ALICE, expires_in=30)
    ctx = CallContext(principal=ALICE, member_id=UPSTREAM, server_id=UPSTREAM)
    await broker.access_token(ALICE, UPSTREAM, config, ctx)
    assert refreshes(metrics) == {(UPSTREAM, "ok"): 1.0}
