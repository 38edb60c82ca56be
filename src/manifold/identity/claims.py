"""Reading and matching token claims: one set of rules for IdP external identities and for `idp:` grants.

A claim is found by its name, or, when no claim has that name, by a dotted path into nested objects
(`realm_access.roles`, as Keycloak nests roles). Values compare as text: strings as they are, numbers and
booleans as their JSON text (`42`, `true`, so YAML's `"true"` matches a boolean claim); objects and null
never match. A list claim matches when any element does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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


def claim_accepted(value: Any, accepted: Sequence[str]) -> bool:
    """Whether one claim's value (from `claim_value`) is one of `accepted`; a list claim when any element is."""
    if value is MISSING:
        return False
    if isinstance(value, list | tuple):
        return any(_as_text(v) in accepted for v in value)
    return _as_text(value) in accepted


def token_has_claims(token_claims: Mapping[str, Any], required: Iterable[tuple[str, str | Sequence[str]]]) -> bool:
    """Whether the token satisfies every (claim, accepted) pair of `required`: an IdP external identity's
    `match.items()` or an `idp:` grant's normalised claims. A single string accepts that value only; a list
    accepts any of its values."""
    for name, wanted in required:
        accepted = (wanted,) if isinstance(wanted, str) else wanted
        if not claim_accepted(claim_value(token_claims, name), accepted):
            return False
    return True
