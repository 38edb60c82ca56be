"""A URL the HTTP client cannot parse is logged as one line when an upstream fails to connect, not a traceback.

The configuration refuses such URLs now (tests/e2e/test_upstream_url_checks.py); one may still reach the
pool some other way (an object stored before, a URL a library builds). Outside probe: the log showed
`ERROR manifold.upstream.pool: upstream gh3: connect failed` and yarl's whole traceback for `Port out of range`.
"""

from __future__ import annotations

import logging

import pytest

from manifold.config.models import Transport, UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.pool import UpstreamPool

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("url", ["http://exa mple.com:99999/mcp", "http://127.0.0.1:99999/mcp"])
async def test_a_url_the_client_cannot_parse_is_one_log_line(caplog: pytest.LogCaptureFixture, url: str) -> None:
    valid = UpstreamConfig(transport=Transport.HTTP, url="http://127.0.0.1:9/mcp", connect_timeout=5)
    # Built without the model's checks, as a row stored before them would have been.
    unchecked = UpstreamConfig.model_construct(**{**dict(valid), "url": url})
    pool = UpstreamPool({"gh3": unchecked})
    try:
        with caplog.at_level(logging.INFO, logger="manifold.upstream.pool"):
            with pytest.raises(UpstreamError) as raised:
                await pool.session("gh3")
    finally:
        await pool.aclose()
    assert "could not be connected" in str(raised.value)
    failures = [r for r in caplog.records if "connect failed" in r.getMessage()]
    assert len(failures) == 1, caplog.text
    assert failures[0].exc_info is None, "logged with a traceback"
    assert failures[0].getMessage() == "upstream gh3: connect failed: its URL is not usable (Port out of range 0-65535)"
