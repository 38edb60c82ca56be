"""Tool pins for admins (docs/pinning.md): list them, show a changed definition's diff, approve it. One set
of operations for the admin API (`/admin/api/tools/pins...`), the console page and `manifold tools`."""

from __future__ import annotations

import time
from typing import Any

from manifold.admin.ops import BadRequest, Conflict, NotFound
from manifold.catalog.pin_store import PinStore, StoredPin
from manifold.catalog.pinning import unified_diff

JSON = dict[str, Any]


def _detail(pin: StoredPin) -> JSON:
    return {
        **pin.as_dict(),
        "approved_definition": pin.approved,
        "pending_definition": pin.pending,
        "diff": unified_diff(pin.approved, pin.pending, f"{pin.upstream}/{pin.tool}") if pin.changed else "",
    }


class PinOperations:
    def __init__(self, store: PinStore) -> None:
        self.store = store

    async def list(self, upstream_id: str | None = None, *, changed_only: bool = False) -> list[JSON]:
        return [pin.as_dict() for pin in await self.store.list(upstream_id or None, changed_only=changed_only)]

    async def diffs(self, upstream_id: str | None = None, tool: str | None = None) -> list[JSON]:
        """The waiting definitions (of one upstream, or one tool) with their diffs."""
        if tool is not None:
            if upstream_id is None:
                raise BadRequest("name the upstream of the tool")
            pin = await self.store.get(upstream_id, tool)
            if pin is None:
                raise NotFound(f"no pinned tool '{tool}' of upstream '{upstream_id}'")
            return [_detail(pin)]
        return [_detail(pin) for pin in await self.store.list(upstream_id or None, changed_only=True)]

    async def get(self, upstream_id: str, tool: str) -> JSON:
        return (await self.diffs(upstream_id, tool))[0]

    async def approve(
        self,
        by: str,
        credential: str,
        *,
        upstream_id: str | None = None,
        tool: str | None = None,
        expected: str | None = None,
    ) -> JSON:
        """Approve what waits: one tool (404 when nothing of it waits), one upstream's, or everything.
        `expected` (one tool): the fingerprint of the definition the approver saw; 409 when the upstream has
        changed the tool again since, so nobody approves a definition they did not see."""
        if tool is not None and upstream_id is None:
            raise BadRequest("name the upstream of the tool")
        if expected is not None and tool is None:
            raise BadRequest("'sha256' names the definition of one tool: name the tool")
        approved = await self.store.approve(
            by, credential, upstream_id=upstream_id, tool=tool, expected=expected, now=time.time()
        )
        if tool is not None and not approved:
            if expected is not None and upstream_id is not None:
                pin = await self.store.get(upstream_id, tool)
                if pin is not None and pin.changed:
                    raise Conflict(
                        f"tool '{tool}' of upstream '{upstream_id}' changed again since that definition was shown "
                        f"(now sha256 {(pin.pending_hash or '')[:12]}): look at its diff again"
                    )
            raise NotFound(f"no changed definition of tool '{tool}' of upstream '{upstream_id}' waits for approval")
        return {"approved": [{"upstream": p.upstream, "tool": p.tool, "sha256": p.pending_hash} for p in approved]}
