"""The consents of the gateway's own authorization server as the admin API, the CLI and the web pages see them.

The store is authserver/store.py (`AuthStore`, `Consent`), above these layers: the composition root hands it in,
and the admin operations and the connections page both read and revoke through these protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class AppConsent(Protocol):
    """One person's consent to one application (authserver/store.py `Consent`)."""

    @property
    def principal(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_name(self) -> str | None: ...
    @property
    def resources(self) -> tuple[str, ...]: ...
    @property
    def updated_at(self) -> float: ...


class AppConsents(Protocol):
    """The consents and sign-ins of the gateway's own authorization server (authserver/store.py `AuthStore`,
    handed in by the composition root and by `manifold apps`)."""

    async def consents(self, principal: str | None = None) -> Sequence[AppConsent]: ...
    async def revoke_client(self, principal: str, client_id: str) -> bool: ...
