"""Values the configuration would otherwise accept and never use are problems, by file, field and line: a
typo must not silently become a default (docs/configuration.md).

- `gateway.allowed_hosts` / `allowed_origins` entries that do not parse (`*.example.com`, an origin without
  its scheme) could never match a request's `Host` or `Origin`; they were left out without a word, and
  `manifold check` said ok.
- `headers` on a stdio upstream were accepted and sent nowhere.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from manifold.config.check import run_check
from manifold.config.loader import load_config
from manifold.config.models import GatewaySettings, UpstreamConfig
from manifold.config.problems import ConfigError, Problem
from manifold.security.origin import OriginPolicy


def load(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifold.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


# ---- allowed_hosts, allowed_origins ---------------------------------------------------------------------


def test_hosts_and_origins_that_cannot_match_a_request_are_problems_with_field_and_line(tmp_path: Path) -> None:
    path = load(
        tmp_path,
        """
        gateway:
          allowed_hosts:
            - mcp.example.com
            - "*.example.com"
            - "https://mcp.example.com"
          allowed_origins:
            - https://app.example.com
            - x.example.com
            - "https://*.example.com"
            - https://app.example.com/path
        upstreams: {}
        """,
    )
    found = {(p.field_path, p.line) for p in problems(path)}
    assert found == {
        ("gateway.allowed_hosts[1]", 4),
        ("gateway.allowed_hosts[2]", 5),
        ("gateway.allowed_origins[1]", 8),
        ("gateway.allowed_origins[2]", 9),
        ("gateway.allowed_origins[3]", 10),
    }
    out = io.StringIO()
    assert run_check(path, out=out) == 1  # was "ok"
    text = out.getvalue()
    assert "gateway.allowed_hosts[1]: '*.example.com' is not a host" in text and "no wildcards" in text
    assert "gateway.allowed_origins[1]: 'x.example.com' is not an origin: write scheme://host[:port]" in text


@pytest.mark.parametrize(
    "host", ["mcp.example.com", "MCP.Example.COM.", "gateway.internal:8470", "10.1.2.3", "[fd00::1]", "fd00::1", " a.b"]
)
def test_every_host_form_the_policy_understands_is_accepted(host: str) -> None:
    settings = GatewaySettings(allowed_hosts=[host])
    assert len(OriginPolicy.from_settings(settings).hosts) == 4  # the loopback names and this one


@pytest.mark.parametrize(
    "origin", ["https://app.example.com", "https://app.example.com/", "http://10.1.2.3:8080", "https://[::1]:8443"]
)
def test_every_origin_form_the_policy_understands_is_accepted(origin: str) -> None:
    settings = GatewaySettings(allowed_origins=[origin])
    assert len(OriginPolicy.from_settings(settings).origins) == 1


def test_an_accepted_origin_lets_its_requests_through() -> None:
    policy = OriginPolicy.from_settings(
        GatewaySettings(allowed_hosts=["mcp.example.com"], allowed_origins=["https://app.example.com:443/"])
    )
    assert policy.check({"host": "mcp.example.com:8470", "origin": "https://app.example.com"}) is None
    assert policy.check({"host": "mcp.example.com", "origin": "https://other.example.com"}) is not None


# ---- headers on a stdio upstream ------------------------------------------------------------------------


def test_headers_on_a_stdio_upstream_are_a_problem_naming_the_field_and_line(tmp_path: Path) -> None:
    path = load(
        tmp_path,
        """
        upstreams:
          notes:
            transport: stdio
            command: python3
            headers:
              X-Team: blue
          quiet:
            transport: stdio
            command: python3
            headers: {}
        """,
    )
    [problem] = problems(path)  # `headers: {}` says nothing, so it is fine
    assert (problem.field_path, problem.line) == ("upstreams.notes.headers", 5)
    assert "stdio upstream gets none" in problem.reason and "'env'" in problem.reason


@pytest.mark.parametrize("transport", ["http", "sse", "openapi"])
def test_headers_are_accepted_where_they_are_sent(transport: str) -> None:
    body: dict[str, object] = {"transport": transport, "url": "https://api.example.com", "headers": {"X-Key": "v"}}
    if transport == "openapi":
        body["spec"] = "api.yaml"
    assert UpstreamConfig.model_validate(body).headers == {"X-Key": "v"}
