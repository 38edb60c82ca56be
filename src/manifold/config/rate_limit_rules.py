"""The checks of `rate_limits:` that no single model can see: the rules' `who` and `what` are the grants'
selectors (config/selectors.py), and rule ids are unique. docs/rate-limits.md describes the grammar."""

from __future__ import annotations

from manifold.config.models import GatewayConfig, RateLimitConfig
from manifold.config.selectors import GrantError, parse_what, parse_who
from manifold.config.sources import SourceFile


def rule_problems(rule: RateLimitConfig) -> list[tuple[str, str]]:
    """(field, problem) for each selector of one rule that does not parse; the admin API uses it too."""
    problems: list[tuple[str, str]] = []
    try:
        parse_who(rule.who)
    except GrantError as exc:
        problems.append(("who", exc.problem))
    if rule.what is not None:
        try:
            parse_what(rule.what)
        except GrantError as exc:
            problems.append(("what", exc.problem))
    return problems


def check_rate_limits(f: SourceFile, gateway: GatewayConfig) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(gateway.rate_limits):
        for field, problem in rule_problems(rule):
            f.add(("rate_limits", i, field), problem)
        if rule.id is not None:
            if rule.id in seen:
                f.add(("rate_limits", i, "id"), f"rate limit '{rule.id}' is defined twice")
            seen.add(rule.id)
