"""Credentials typed into an API-made upstream (admin API, console form, CLI) are not kept in the catalog
table in clear: each plain-text value of the upstream's `auth` (`bearer`, `client_secret`, the values of
`headers`, at any depth) goes to the encrypted secret store (security/secret_store.py) under a name of its
own, and the stored body keeps `secret:NAME` — what an admin writing a file would write. The credential
resolver already resolves `secret:` in those fields (outbound/resolver.py), so nothing else changes.

Names are `catalog.<upstream id>.<field>.<stamp>`: a fresh stamp per write, so a body that fails its checks
never overwrites a value in use (its new secrets are forgotten), and an update drops only the secrets the
old body held and the new one does not. `${ENV}` references and `secret:` references are kept as written.
Transport `headers` and stdio `env` resolve only `${ENV}` and are left as given (docs/console.md).
"""

from __future__ import annotations

import re
import secrets as _random
from collections.abc import Iterable
from typing import Any

from manifold.security.secret_store import SecretStore

JSON = dict[str, Any]
PREFIX = "catalog."
SECRET_KEYS = frozenset({"bearer", "client_secret"})
# A reference, not a secret: `${ENV}` (optionally after a scheme word, "Bearer ${TOKEN}") or `secret:NAME`.
ENV_REFERENCE = r"(?:[A-Za-z]+ )?\$\{[A-Za-z_][A-Za-z0-9_]*\}"
_REFERENCE = re.compile(rf"{ENV_REFERENCE}|secret:[A-Za-z0-9_.-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
HIDDEN = "(hidden)"  # what GET shows for a credential (admin/catalog.py); replaced by the stored value before sealing


def _is_literal(value: object) -> bool:
    return isinstance(value, str) and bool(value) and value != HIDDEN and not _REFERENCE.fullmatch(value)


def _name(object_id: str, field: str, stamp: str) -> str:
    part = lambda text: _UNSAFE.sub("_", text)[:40]  # noqa: E731 — one line, used twice
    return f"{PREFIX}{part(object_id)}.{part(field)}.{stamp}"


def seal_auth(body: JSON, object_id: str, stamp: str) -> tuple[JSON, dict[str, str]]:
    """`body` with its auth's plain-text credentials replaced by `secret:NAME`, and those names' values."""
    auth = body.get("auth")
    if not isinstance(auth, dict):
        return body, {}
    found: dict[str, str] = {}

    def walk(node: JSON, trail: str) -> JSON:
        out: JSON = {}
        for key, value in node.items():
            here = f"{trail}{key}"
            if key in SECRET_KEYS and _is_literal(value):
                name = _name(object_id, here, stamp)
                found[name] = value
                out[key] = f"secret:{name}"
            elif key == "headers" and isinstance(value, dict):
                headers: JSON = {}
                for header, text in value.items():
                    if _is_literal(text):
                        name = _name(object_id, f"{here}-{header}", stamp)
                        found[name] = text
                        headers[header] = f"secret:{name}"
                    else:
                        headers[header] = text
                out[key] = headers
            elif isinstance(value, dict):
                out[key] = walk(value, f"{here}-")
            else:
                out[key] = value
        return out

    return {**body, "auth": walk(auth, "")}, found


def owned(body: JSON, object_id: str) -> set[str]:
    """The secret names `body` refers to that were made for upstream `object_id` by `seal_auth`."""
    mine = f"{PREFIX}{_UNSAFE.sub('_', object_id)[:40]}."
    names: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and value.startswith("secret:" + mine):
            names.add(value[len("secret:") :])

    walk(body.get("auth"))
    return names


class CatalogSecrets:
    """`seal_auth` with the store: values written before the body, forgotten when it is refused or dropped."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    async def seal(self, body: JSON, object_id: str) -> tuple[JSON, list[str]]:
        sealed, values = seal_auth(body, object_id, _random.token_hex(4))
        for name, value in values.items():
            await self.store.set(name, value)
        return sealed, list(values)

    async def forget(self, names: Iterable[str]) -> None:
        for name in names:
            await self.store.delete(name)
