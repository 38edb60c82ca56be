"""Reading and matching token claims: one set of rules for IdP external identities and for `idp:` grants.

A claim is found by its name, or, when no claim has that name, by a dotted path into nested objects
(`realm_access.roles`, as Keycloak nests roles). Values compare as text: strings as they are, numbers and
booleans as their JSON text (`42`, `true`, so YAML's `"true"` matches a boolean claim); objects and null
never match. A list claim matches when any element does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


MISSING: Any = _Missing()  # what `claim_value` returns for a claim the token does not have


def claim_value(claims: Mapping[str, Any], key: str) -> Any:
    """The claim `key`: the top-level claim of that name, else a dotted path into nested objects."""
    if key in claims:
        return claims[key]
    if "." not in key:
        return MISSING
    node: Any = claims
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return None  # objects never match


def claim_matches(accepted: tuple[str, ...], value: Any) -> bool:
    if value is MISSING:
        return False
    if isinstance(value, list | tuple):
        return any(_as_text(v) in accepted for v in value)
    return _as_text(value) in accepted


def claims_match(claims: Mapping[str, Any], match: Mapping[str, str | list[str]]) -> bool:
    """Every key of `match` must match; a list in `match` means any of its values."""
    for name, wanted in match.items():
        accepted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        if not claim_matches(accepted, claim_value(claims, name)):
            return False
    return True
