"""OpenAPI documents read into tools (upstream/openapi_spec.py), and `manifold check` naming the document's
problems by file, field and line, and the upstream's own (`spec`, `url`) in manifold.yaml."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from manifold.config.check import run_check
from manifold.config.loader import load_config
from manifold.config.problems import ConfigError
from manifold.upstream.openapi_spec import check_documents, load_spec_file, parse_spec_text

UPSTREAMS = Path(__file__).resolve().parents[1] / "upstreams"

HEAD = """\
openapi: 3.0.3
info: {title: t, version: "1"}
"""


def check(tmp_path: Path, spec: str, upstream: str = "    url: http://127.0.0.1:9\n") -> list[str]:
    (tmp_path / "api.yaml").write_text(textwrap.dedent(spec))
    (tmp_path / "manifold.yaml").write_text(
        "upstreams:\n  shop:\n    transport: openapi\n    spec: api.yaml\n" + upstream
    )
    out = io.StringIO()
    code = run_check(tmp_path / "manifold.yaml", out=out, documents=check_documents)
    lines = out.getvalue().splitlines()
    assert code == (1 if re.fullmatch(r"\d+ problems? in .*", lines[-1]) else 0), lines
    return lines


def test_the_test_services_document_is_fine(tmp_path: Path) -> None:
    lines = check(tmp_path, (UPSTREAMS / "rest_service.yaml").read_text())
    assert lines[0] == "ok: 1 upstream, 0 virtual servers"


def test_a_structural_mistake_is_named_by_file_field_and_line(tmp_path: Path) -> None:
    lines = check(
        tmp_path,
        HEAD
        + """\
paths:
  /a/{id}:
    get:
      parameters:
        - name: id
          in: body
""",
    )
    assert lines == [
        "api.yaml: paths[\"/a/{id}\"].get.parameters[0].in: input should be 'path', 'query', 'header' or 'cookie' "
        "(line 8)",
        "1 problem in api.yaml",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            """\
paths:
  /a:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "other.yaml#/Pet"}
""",
            'api.yaml: paths["/a"].post.requestBody.content["application/json"].schema["$ref"]: remote $ref '
            "'other.yaml#/Pet' is not supported; only references within the document (line 9)",
        ),
        (
            """\
paths:
  /a:
    get:
      parameters:
        - $ref: "#/components/parameters/Nope"
""",
            'api.yaml: paths["/a"].get.parameters[0]["$ref"]: $ref \'#/components/parameters/Nope\' points to '
            "nothing in the document (line 7)",
        ),
        (
            """\
paths:
  /a/{id}:
    get:
      operationId: getA
""",
            'api.yaml: paths["/a/{id}"].get: the path /a/{id} has {id} but no such path parameter (line 5)',
        ),
        (
            """\
paths:
  /a:
    get: {operationId: same}
  /b:
    get: {operationId: same}
""",
            "api.yaml: paths[\"/b\"].get.operationId: tool name 'same' is also the name of GET /a (line 7)",
        ),
    ],
    ids=["remote-ref", "dangling-ref", "path-parameter", "duplicate-name"],
)
def test_problems_of_the_tools_built(tmp_path: Path, body: str, expected: str) -> None:
    assert check(tmp_path, HEAD + body)[0] == expected


def test_swagger_2_is_refused_plainly(tmp_path: Path) -> None:
    lines = check(tmp_path, 'swagger: "2.0"\ninfo: {title: t, version: "1"}\npaths: {}\n')
    assert lines[0] == "api.yaml: swagger: Swagger 2.0 documents are not supported; convert it to OpenAPI 3 (line 1)"


def test_the_upstreams_own_fields(tmp_path: Path) -> None:
    # No url, and the document's servers[0] is relative: nothing to call.
    lines = check(tmp_path, HEAD + "servers: [{url: /v1}]\npaths: {}\n", upstream="")
    assert lines[0] == (
        "manifold.yaml: upstreams.shop: needs 'url': its OpenAPI document 'api.yaml' names no absolute server URL "
        "(line 2)"
    )
    (tmp_path / "manifold.yaml").write_text("upstreams:\n  shop:\n    transport: openapi\n    spec: gone.yaml\n")
    out = io.StringIO()
    assert run_check(tmp_path / "manifold.yaml", out=out, documents=check_documents) == 1
    assert out.getvalue().splitlines()[0] == (
        "manifold.yaml: upstreams.shop.spec: OpenAPI document 'gone.yaml' does not exist (line 4)"
    )


@pytest.mark.parametrize(
    ("upstream", "reason"),
    [
        ("{transport: openapi}", "an openapi upstream needs 'spec' (a file or an http(s) URL of its OpenAPI document)"),
        ("{transport: http, url: 'http://x/mcp', spec: a.yaml}", "'spec' is for openapi upstreams"),
        ("{transport: openapi, spec: a.yaml, url: 'ftp://x'}", "'url' must start with http:// or https://"),
        (
            "{transport: openapi, spec: a.yaml, auth: {mode: oauth}}",
            "an openapi upstream with auth mode oauth needs 'url' (the API the tokens are for)",
        ),
    ],
)
def test_config_fields(tmp_path: Path, upstream: str, reason: str) -> None:
    (tmp_path / "manifold.yaml").write_text(f"upstreams:\n  shop: {upstream}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "manifold.yaml")
    assert [p.reason for p in caught.value.problems] == [reason]


def test_names_descriptions_and_server_variables() -> None:
    api, problems = parse_spec_text(
        HEAD
        + """\
servers:
  - url: https://{region}.example.com/v2
    variables: {region: {default: eu}}
paths:
  /users/{user-id}/keys:
    parameters: [{name: user-id, in: path, required: true, schema: {type: string}}]
    put:
      description: Replace the keys.
      parameters:
        - {name: Authorization, in: header, schema: {type: string}}
        - {name: session, in: cookie}
        - {name: user-id, in: query}
  /x:
    get: {operationId: "list.things v2"}
""",
        "https://example.com/openapi.yaml",
    )
    assert problems == [] and api is not None
    assert api.server_url == "https://eu.example.com/v2"
    put = api.operations["put_users_user-id_keys"]
    # Authorization (the credential's) and cookies are never arguments; the same name in two places is kept apart.
    assert list(put.tool["inputSchema"]["properties"]) == ["user-id", "user-id_query"]
    assert put.tool["description"] == "Replace the keys."
    assert put.tool["annotations"]["readOnlyHint"] is False and put.tool["annotations"]["destructiveHint"] is False
    assert "list_things_v2" in api.operations


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text("openapi: [3.0\n")
    api, problems = load_spec_file(tmp_path / "api.yaml", "api.yaml")
    assert api is None and str(problems[0]).startswith("api.yaml: YAML syntax error at line 2")


def test_manifold_check_reads_the_documents(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(HEAD + "paths:\n  /a:\n    get:\n      parameters: [{name: q}]\n")
    (tmp_path / "manifold.yaml").write_text(
        "upstreams:\n  shop: {transport: openapi, spec: api.yaml, url: 'http://127.0.0.1:9'}\n"
    )
    command = [sys.executable, "-m", "manifold.cli", "--config", str(tmp_path / "manifold.yaml"), "check"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        """api.yaml: paths["/a"].get.parameters[0]: a parameter needs 'name' and 'in' (or a '$ref') (line 6)"""
    )
