"""An OpenAPI 3 document read into the tools an `openapi` upstream offers (docs/openapi.md).

The document's structure is checked with pydantic models (only what the gateway uses; everything else,
`x-` extensions included, is ignored); every problem names the document, the field path and the line, in the
same `Problem` form as the configuration's own (config/problems.py), so `manifold check` reports both alike.

Each operation becomes one `RestOperation`: its MCP tool definition (name = operationId, or a slug of method
and path; description from summary and description; an `inputSchema` of the path, query and header
parameters and a `body` for a JSON request body; `readOnlyHint` for GET/HEAD, `destructiveHint` for DELETE)
and what a call needs to make the REST request. `$ref`s are local only: parameters and request bodies are
resolved, and schemas under `#/components/schemas/` are copied into the tool's `$defs` (so recursive schemas
stay finite). A remote `$ref` is a problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from manifold.config.loaded import LoadedConfig
from manifold.config.models import Transport
from manifold.config.problems import Loc, Problem, report_validation
from manifold.config.sources import SourceFile, read_yaml

JSON = dict[str, Any]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
READ_ONLY_METHODS = frozenset({"get", "head"})
SCHEMA_REF = "#/components/schemas/"
# A tool name as MCP clients accept it (and naming.py keeps it): ^[A-Za-z0-9_-]{1,64}$
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_TEMPLATE = re.compile(r"\{([^{}/]+)\}")
# Header parameters OpenAPI itself says are ignored (the transport and the credential decide them).
IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
MAX_REF_DEPTH = 32


class _Open(BaseModel):
    """Unknown keys are ignored: a document carries much the gateway does not use (responses, tags, x-...)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Parameter(_Open):
    ref: str | None = Field(default=None, alias="$ref")
    name: str | None = None
    in_: Literal["path", "query", "header", "cookie"] | None = Field(default=None, alias="in")
    description: str | None = None
    required: bool = False
    schema_: JSON | bool | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _named(self) -> Parameter:
        if self.ref is None and (self.name is None or self.in_ is None):
            raise ValueError("a parameter needs 'name' and 'in' (or a '$ref')")
        return self


class MediaType(_Open):
    schema_: JSON | bool | None = Field(default=None, alias="schema")


class RequestBody(_Open):
    ref: str | None = Field(default=None, alias="$ref")
    description: str | None = None
    content: dict[str, MediaType] = Field(default_factory=dict)
    required: bool = False


class Operation(_Open):
    operationId: str | None = None
    summary: str | None = None
    description: str | None = None
    parameters: list[Parameter] = Field(default_factory=list)
    requestBody: RequestBody | None = None
    deprecated: bool = False


class PathItem(_Open):
    ref: str | None = Field(default=None, alias="$ref")
    parameters: list[Parameter] = Field(default_factory=list)
    get: Operation | None = None
    put: Operation | None = None
    post: Operation | None = None
    delete: Operation | None = None
    patch: Operation | None = None
    head: Operation | None = None
    options: Operation | None = None
    trace: Operation | None = None


class ServerVariable(_Open):
    default: str


class Server(_Open):
    url: str
    variables: dict[str, ServerVariable] = Field(default_factory=dict)


class Info(_Open):
    title: str
    version: str
    description: str | None = None


class Components(_Open):
    schemas: dict[str, JSON | bool] = Field(default_factory=dict)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    requestBodies: dict[str, RequestBody] = Field(default_factory=dict)


class OpenApiDocument(_Open):
    openapi: Annotated[str, Field(pattern=r"^3\.")]
    info: Info
    servers: list[Server] = Field(default_factory=list)
    paths: dict[str, PathItem] = Field(default_factory=dict)
    components: Components = Field(default_factory=Components)


# ---- what the gateway makes of it -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestParameter:
    argument: str  # the tool argument's name
    name: str  # the name on the wire
    location: Literal["path", "query", "header"]
    required: bool


@dataclass(frozen=True, slots=True)
class RestOperation:
    tool: JSON  # the MCP tool definition, as tools/list shows it
    method: str  # upper case
    path: str  # the path template, e.g. /pets/{petId}
    parameters: tuple[RestParameter, ...]
    body_argument: str | None  # the tool argument carrying the JSON request body, if the operation takes one
    body_required: bool = False


@dataclass(frozen=True)
class RestApi:
    title: str
    version: str
    description: str | None
    server_url: str | None  # servers[0] with its variables' defaults, or None
    operations: dict[str, RestOperation]  # by tool name, in document order
    notes: list[str] = field(default_factory=list)  # operations left out, and why (not errors)
    # The tools/list result's tools, serialised once: every tools/list hands out a fresh parse of it, so no
    # caller can change what the next one gets.
    tools_json: bytes = b"[]"


class _Problems:
    """Problems of one document, located by field (a `ProblemSink`)."""

    def __init__(self, source: SourceFile) -> None:
        self.source = source

    def add(self, loc: Loc, reason: str) -> None:
        self.source.add(loc, reason)


def load_spec_file(path: Path, display: str) -> tuple[RestApi | None, list[Problem]]:
    """Read and check the document in `path` (YAML or JSON). Problems name `display` as the file."""
    problems: list[Problem] = []
    source = SourceFile(path, display, problems)
    raw = read_yaml(source)
    if raw is None:
        return None, problems
    return _build(source, raw), problems


def parse_spec_text(text: str, display: str) -> tuple[RestApi | None, list[Problem]]:
    """Check a document fetched from a URL (YAML or JSON). Problems carry no line numbers."""
    problems: list[Problem] = []
    source = SourceFile(Path(display), display, problems)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        source.add((), f"neither JSON nor YAML{pos}")
        return None, problems
    if not isinstance(raw, dict):
        source.add((), "the document must be a mapping (an OpenAPI object)")
        return None, problems
    return _build(source, raw), problems


def _build(source: SourceFile, raw: JSON) -> RestApi | None:
    if "swagger" in raw and "openapi" not in raw:
        source.add(("swagger",), "Swagger 2.0 documents are not supported; convert it to OpenAPI 3")
        return None
    try:
        doc = OpenApiDocument.model_validate(raw)
    except ValidationError as e:
        report_validation(_Problems(source), OpenApiDocument, e)
        return None
    before = len(source.problems)
    api = _Builder(source, doc, raw).build()
    return api if len(source.problems) == before else None


class _Builder:
    def __init__(self, source: SourceFile, doc: OpenApiDocument, raw: JSON) -> None:
        self.source = source
        self.doc = doc
        self.raw = raw

    def build(self) -> RestApi:
        operations: dict[str, RestOperation] = {}
        where: dict[str, str] = {}
        notes: list[str] = []
        for path, item in self.doc.paths.items():
            if not path.startswith("/"):
                self.source.add(("paths", path), "a path must start with '/'")
                continue
            if item.ref is not None:
                self.source.add(("paths", path, "$ref"), "path item references are not supported")
                continue
            for method in METHODS:
                op: Operation | None = getattr(item, method)
                if op is None:
                    continue
                loc: Loc = ("paths", path, method)
                built = self._operation(loc, method, path, item, op)
                if isinstance(built, str):
                    notes.append(f"{method.upper()} {path}: {built}")
                    continue
                if built is None:
                    continue
                name = built.tool["name"]
                if name in operations:
                    self.source.add(
                        loc + (("operationId",) if op.operationId else ()),
                        f"tool name '{name}' is also the name of {where[name]}",
                    )
                    continue
                operations[name] = built
                where[name] = f"{method.upper()} {path}"
        return RestApi(
            title=self.doc.info.title,
            version=self.doc.info.version,
            description=self.doc.info.description,
            server_url=_server_url(self.doc.servers[0]) if self.doc.servers else None,
            operations=operations,
            notes=notes,
            tools_json=orjson.dumps([op.tool for op in operations.values()]),
        )

    def _operation(self, loc: Loc, method: str, path: str, item: PathItem, op: Operation) -> RestOperation | str | None:
        """The operation as a tool; a string says why it is left out (not an error); None after a problem."""
        name = _tool_name(op.operationId) if op.operationId else _slug(method, path)
        if not name:
            self.source.add(loc + ("operationId",), "an operationId needs at least one letter or digit")
            return None
        # Operation parameters override the path item's of the same name and location.
        merged: dict[tuple[str, str], tuple[Loc, Parameter]] = {}
        for base, params in ((("paths", path, "parameters"), item.parameters), (loc + ("parameters",), op.parameters)):
            for i, p in enumerate(params):
                resolved = self._parameter(base + (i,), p)
                if resolved is None:
                    return None
                assert resolved.name is not None and resolved.in_ is not None
                merged[(resolved.name, resolved.in_)] = (base + (i,), resolved)
        properties: JSON = {}
        required: list[str] = []
        defs: JSON = {}
        rest: list[RestParameter] = []
        templated = set(_TEMPLATE.findall(path))
        for ploc, p in merged.values():
            pname, where = p.name, p.in_
            assert pname is not None and where is not None
            if where == "cookie" or (where == "header" and pname.lower() in IGNORED_HEADERS):
                continue
            if where == "path" and pname not in templated:
                self.source.add(ploc + ("name",), f"path parameter '{pname}' does not appear in the path {path}")
                return None
            argument = pname if pname not in properties else f"{pname}_{where}"
            schema = self._schema(ploc + ("schema",), p.schema_, defs) if p.schema_ is not None else {"type": "string"}
            if schema is None:
                return None
            if p.description and isinstance(schema, dict) and "description" not in schema:
                schema = {**schema, "description": p.description}
            properties[argument] = schema
            is_required = p.required or where == "path"
            if is_required:
                required.append(argument)
            rest.append(RestParameter(argument, pname, where, is_required))
        missing = templated - {p.name for p in rest if p.location == "path"}
        if missing:
            self.source.add(loc, f"the path {path} has {{{sorted(missing)[0]}}} but no such path parameter")
            return None
        body_argument: str | None = None
        body_required = False
        if op.requestBody is not None:
            body = self._request_body(loc + ("requestBody",), op.requestBody)
            if body is None:
                return None
            media = _json_media(body)
            if media is None:
                if body.required:
                    kinds = ", ".join(body.content) or "no content"
                    return f"its request body is not JSON ({kinds})"
            else:
                body_argument = "body"
                while body_argument in properties:
                    body_argument = f"{body_argument}_"
                mtype, mt = media
                schema = (
                    self._schema(loc + ("requestBody", "content", mtype, "schema"), mt.schema_, defs)
                    if mt.schema_ is not None
                    else {}
                )
                if schema is None:
                    return None
                if body.description and isinstance(schema, dict) and "description" not in schema:
                    schema = {**schema, "description": body.description}
                properties[body_argument] = schema
                body_required = body.required
                if body.required:
                    required.append(body_argument)
        input_schema: JSON = {"type": "object", "properties": properties}
        if required:
            input_schema["required"] = required
        if defs:
            input_schema["$defs"] = defs
        tool: JSON = {"name": name, "inputSchema": input_schema, "annotations": _annotations(method, op)}
        if op.summary:
            tool["title"] = op.summary
        text = "\n\n".join(t for t in (op.summary, op.description) if t)
        tool["description"] = text or f"{method.upper()} {path}"
        return RestOperation(tool, method.upper(), path, tuple(rest), body_argument, body_required)

    # ---- $ref -----------------------------------------------------------------------------------------

    def _target(self, loc: Loc, ref: str, prefix: str) -> tuple[str, Any] | None:
        if not ref.startswith("#/"):
            self.source.add(loc, f"remote $ref '{ref}' is not supported; only references within the document")
            return None
        if not ref.startswith(prefix):
            self.source.add(loc, f"$ref '{ref}' must point under '{prefix}'")
            return None
        key = ref[len(prefix) :].replace("~1", "/").replace("~0", "~")
        section = self.raw.get("components") or {}
        kind = prefix.removeprefix("#/components/").rstrip("/")
        found = section.get(kind) if isinstance(section, dict) else None
        if not isinstance(found, dict) or key not in found:
            self.source.add(loc, f"$ref '{ref}' points to nothing in the document")
            return None
        return key, found[key]

    def _parameter(self, loc: Loc, p: Parameter) -> Parameter | None:
        for _ in range(MAX_REF_DEPTH):
            if p.ref is None:
                return p
            target = self._target(loc + ("$ref",), p.ref, "#/components/parameters/")
            if target is None:
                return None
            p = self.doc.components.parameters[target[0]]
        self.source.add(loc, "$ref chain too long (a cycle?)")
        return None

    def _request_body(self, loc: Loc, body: RequestBody) -> RequestBody | None:
        for _ in range(MAX_REF_DEPTH):
            if body.ref is None:
                return body
            target = self._target(loc + ("$ref",), body.ref, "#/components/requestBodies/")
            if target is None:
                return None
            body = self.doc.components.requestBodies[target[0]]
        self.source.add(loc, "$ref chain too long (a cycle?)")
        return None

    def _schema(self, loc: Loc, schema: JSON | bool, defs: JSON) -> JSON | bool | None:
        """`schema` with every `#/components/schemas/X` reference rewritten to `#/$defs/X`, and each schema
        so referenced (transitively) copied into `defs`. None after a problem."""
        todo: list[str] = []
        rewritten = self._rewrite(loc, schema, todo)
        if rewritten is None:
            return None
        while todo:
            key = todo.pop()
            if key in defs:
                continue
            defs[key] = True  # placeholder: a cycle stops here
            component = self.doc.components.schemas[key]
            out = self._rewrite(("components", "schemas", key), component, todo)
            if out is None:
                return None
            defs[key] = out
        return rewritten

    def _rewrite(self, loc: Loc, value: Any, todo: list[str]) -> Any | None:
        if isinstance(value, dict):
            out: JSON = {}
            for k, v in value.items():
                if k == "$ref" and isinstance(v, str):
                    target = self._target(loc + ("$ref",), v, SCHEMA_REF)
                    if target is None:
                        return None
                    todo.append(target[0])
                    out[k] = "#/$defs/" + target[0].replace("~", "~0").replace("/", "~1")
                    continue
                sub = self._rewrite(loc + (str(k),), v, todo)
                if sub is None and v is not None:
                    return None
                out[str(k)] = sub
            return out
        if isinstance(value, list):
            items: list[Any] = []
            for i, v in enumerate(value):
                sub = self._rewrite(loc + (i,), v, todo)
                if sub is None and v is not None:
                    return None
                items.append(sub)
            return items
        return value


def _json_media(body: RequestBody) -> tuple[str, MediaType] | None:
    for mtype, media in body.content.items():
        base = mtype.split(";", 1)[0].strip().lower()
        if base == "application/json" or base.endswith("+json"):
            return mtype, media
    return None


def _annotations(method: str, op: Operation) -> JSON:
    annotations: JSON = {"readOnlyHint": method in READ_ONLY_METHODS}
    if method == "delete":
        annotations["destructiveHint"] = True
    elif method not in READ_ONLY_METHODS:
        annotations["destructiveHint"] = False
    if method in ("put", "delete") or method in READ_ONLY_METHODS:
        annotations["idempotentHint"] = True
    annotations["openWorldHint"] = True
    if op.summary:
        annotations["title"] = op.summary
    return annotations


def _tool_name(operation_id: str) -> str:
    return _NOT_NAME.sub("_", operation_id).strip("_")[:64]


def _slug(method: str, path: str) -> str:
    """`get /pets/{petId}/toys` → `get_pets_petId_toys`."""
    words = [w for w in _NOT_NAME.split(path.replace("{", "").replace("}", "")) if w]
    return _tool_name("_".join([method, *words]))


def _server_url(server: Server) -> str:
    def value(m: re.Match[str]) -> str:
        variable = server.variables.get(m.group(1))
        return variable.default if variable is not None else m.group(0)

    return _TEMPLATE.sub(value, server.url)


def first_problems(problems: list[Problem], limit: int = 3) -> str:
    """A few problems as one line (for an UpstreamError); the full list is `manifold check`'s."""
    shown = "; ".join(str(p) for p in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def operations_summary(api: RestApi) -> Mapping[str, str]:
    """Tool name → "METHOD /path", for logs and `manifold check`."""
    return {name: f"{op.method} {op.path}" for name, op in api.operations.items()}


def check_documents(config: LoadedConfig) -> list[Problem]:
    """`manifold check`: every openapi upstream's document that is a file, read and checked (a URL is not
    fetched: `check` touches nothing outside the files). Problems in a document name that document, the
    field and the line; a missing document or base URL is a problem of the upstream's own field."""
    problems: list[Problem] = []
    main = SourceFile(config.path, config.path.name, problems)
    indexed = False
    for upstream_id, upstream in config.upstreams.items():
        if upstream.transport is not Transport.OPENAPI or upstream.spec is None:
            continue
        if not indexed:
            read_yaml(main)  # the lines of the config's own fields
            indexed = True
        if upstream.spec.startswith(("http://", "https://")):
            continue
        path = Path(config.openapi_spec(upstream.spec))
        if not path.is_file():
            main.add(("upstreams", upstream_id, "spec"), f"OpenAPI document '{upstream.spec}' does not exist")
            continue
        api, found = load_spec_file(path, _display(config.base_dir, path))
        problems.extend(found)
        if api is not None and not upstream.url and not (api.server_url or "").startswith(("http://", "https://")):
            main.add(
                ("upstreams", upstream_id),
                f"needs 'url': its OpenAPI document '{upstream.spec}' names no absolute server URL",
            )
    return problems


def _display(base: Path, p: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)
