"""The servers the gateway serves right now, by id: every virtual server and every upstream alone.

One owner changes it: the catalog swap (runtime/catalog_swap.py), which replaces the whole set with no
await in between, so a request is decided either on the old set or on the new one, never on a mixture.
Everyone else reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from manifold.catalog.view import VirtualServerView


class ServedServers:
    def __init__(self, views: dict[str, VirtualServerView]) -> None:
        self._views = dict(views)

    def get(self, server_id: str) -> VirtualServerView | None:
        return self._views.get(server_id)

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._views

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def items(self) -> list[tuple[str, VirtualServerView]]:
        return list(self._views.items())

    def ids(self) -> list[str]:
        return sorted(self._views)

    def replace(self, views: dict[str, VirtualServerView]) -> None:
        self._views = dict(views)
