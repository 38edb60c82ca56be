"""`/admin/api/rate-limits`: list, add, replace and remove rate-limit rules (docs/rate-limits.md).

  GET    /admin/api/rate-limits          every rule: manifold.yaml's (read-only here) and the API's
  POST   /admin/api/rate-limits          add a rule (body: a `rate_limits:` entry; `id` optional) → 201
  PUT    /admin/api/rate-limits/{id}     replace an API rule's body
  DELETE /admin/api/rate-limits/{id}     remove an API rule

A change is applied in this process before the answer and reaches the other replicas through the
`rate_limits` revision scope (runtime/changes.py). The admin API audits every change (admin/api.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from manifold.admin.ops import BadRequest, Conflict, NotFound
from manifold.config.models import RateLimitConfig
from manifold.config.rate_limit_rules import rule_problems
from manifold.policy.rate_limit_store import RateLimitRepository
from manifold.policy.rate_limits import RateLimits

JSON = dict[str, Any]


def _config(body: JSON, rule_id: str | None = None) -> RateLimitConfig:
    if rule_id is not None:
        if body.get("id", rule_id) != rule_id:
            raise BadRequest(f"'id': the rule's id is {rule_id} (it is in the path); it cannot change")
        body = {**body, "id": rule_id}
    try:
        config = RateLimitConfig.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"'{where}': {first['msg']}") from None
    for field, problem in rule_problems(config):
        raise BadRequest(f"'{field}': {problem}")
    return config


class RateLimitAdmin:
    def __init__(self, limits: RateLimits, repository: RateLimitRepository) -> None:
        self.limits = limits
        self.repository = repository

    async def route(self, method: str, rest: list[str], body: JSON) -> tuple[int, Any]:
        """`/admin/api/rate-limits/<rest>`: (status, answer), or an `OpError`."""
        match method, rest:
            case "GET", []:
                return 200, [{"id": r.id, "source": r.source, **_body(r.config)} for r in await self.limits.stored()]
            case "POST", []:
                config = _config(body)
                exists = f"rate limit '{config.id}' exists; PUT /admin/api/rate-limits/{config.id} changes it"
                if config.id is not None and (
                    self.limits.file_rule(config.id) is not None or await self.repository.exists(config.id)
                ):
                    raise Conflict(exists)
                stored = await self.repository.add(config)
                if stored is None:  # the same id stored by a concurrent request since the check above
                    raise Conflict(exists)
                await self.limits.reload()  # live here before the answer; other replicas through the revision
                return 201, {"id": stored.id, "source": stored.source, **_body(stored.config)}
            case "PUT", [rule_id]:
                self._not_file(rule_id)
                config = _config(body, rule_id)
                if not await self.repository.update(rule_id, config):
                    raise NotFound(f"no rate limit '{rule_id}'")
                await self.limits.reload()
                return 200, {"id": rule_id, "source": "api", **_body(config)}
            case "DELETE", [rule_id]:
                self._not_file(rule_id)
                if not await self.repository.remove(rule_id):
                    raise NotFound(f"no rate limit '{rule_id}'")
                await self.limits.reload()
                return 200, {"id": rule_id, "deleted": True}
            case _:
                raise NotFound(f"no route {method} /admin/api/rate-limits{''.join('/' + p for p in rest)}")

    def _not_file(self, rule_id: str) -> None:
        if self.limits.file_rule(rule_id) is not None:
            raise Conflict(f"rate limit {rule_id} is declared in manifold.yaml; change it there")


def _body(config: RateLimitConfig) -> JSON:
    return config.model_dump(exclude_none=True, exclude={"id"})
