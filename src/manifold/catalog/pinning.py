"""Tool pinning (rug-pull protection, docs/pinning.md): an upstream tool's definition is approved once, and a
later change to it is held (or flagged) until an admin approves the new one.

A tool's *definition* is what a model reads and trusts: its name, title, description, input and output schema
and annotations (`PINNED_FIELDS`; `_meta` and the rest are not pinned). It is written as canonical JSON (keys
sorted, no insignificant whitespace, UTF-8) and hashed with SHA-256: the *fingerprint*. Trust on first use: a
tool the gateway has never seen for an upstream is approved as it is the first time it is listed. A tool whose
fingerprint later differs from the approved one is *changed*:

- `hold` (the default): it is left out of the upstream's cached tool list, so it is in no tools/list and a
  tools/call naming it is an unknown tool (a client that cached the old list cannot call it either);
- `flag`: it stays listed, with `_meta["io.manifold/pinning"]` saying so, and a warning is logged;
- `off`: nothing is pinned.

Pins live in the database (pin_store.py), so every replica and the CLI agree. The review runs only when an
upstream's tool list is fetched (start, `list_changed`, TTL), never on the tools/call path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, assert_never

from manifold.audit import AuditEvent, Outcome
from manifold.catalog.pin_store import PinStore, StoredPin
from manifold.config.models import PinningMode

log = logging.getLogger(__name__)
JSON = dict[str, Any]

PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
CHANGES_LOGGED = 20  # changes found in one list logged a line each; the rest in one line (all are audited)
META_KEY = "io.manifold/pinning"  # in a flagged tool's _meta: {"status": "changed", "approved": ..., "seen": ...}
NAME_LIMIT = 400  # tool names longer than the pins table's column cannot be pinned: held (or flagged)
# The pin of an upstream's `instructions` (passed on to clients by a server of that one upstream, and read by
# the model like a tool's description): pinned like a tool of this name, which no tool can have ('#' is not in
# MCP's tool-name alphabet; a tool listed with this very name is unpinnable, so held or flagged).
INSTRUCTIONS = "#instructions"


def instructions_entry(text: str) -> JSON:
    """An upstream's instructions as the pseudo-tool their pin is made of."""
    return {"name": INSTRUCTIONS, "description": text}


def definition(tool: JSON) -> JSON:
    """The pinned part of an upstream tool entry."""
    return {k: tool[k] for k in PINNED_FIELDS if k in tool}


def canonical(tool: JSON) -> str:
    """The pinned definition as canonical JSON: sorted keys, no whitespace between tokens, non-ASCII kept."""
    return json.dumps(definition(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(tool: JSON) -> str:
    """SHA-256 (hex) of the canonical definition."""
    return hashlib.sha256(canonical(tool).encode()).hexdigest()


def readable(defn: JSON | None) -> list[str]:
    """A definition as indented, key-sorted JSON lines (what a diff compares)."""
    if defn is None:
        return []
    return json.dumps(defn, sort_keys=True, indent=2, ensure_ascii=False).splitlines()


def unified_diff(old: JSON | None, new: JSON | None, label: str) -> str:
    """A unified diff of two definitions' readable JSON ('' when equal)."""
    lines = difflib.unified_diff(
        readable(old), readable(new), fromfile=f"{label} (approved)", tofile=f"{label} (seen)", lineterm=""
    )
    return "\n".join(lines)


AuditSink = Callable[[AuditEvent], None]


class ToolPins:
    """The gateway's side of pinning: reviews each tool list an upstream sends (catalog/lists.py calls
    `review`) and knows how many tools it holds right now (`held_count`, for /metrics)."""

    def __init__(
        self,
        store: PinStore,
        mode_of: Callable[[str], PinningMode],
        audit: AuditSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._mode_of = mode_of
        self._audit = audit
        self._clock = clock
        self._held: dict[str, int] = {}  # upstream id -> tools held out of its list at the last review
        # upstream id -> fingerprint of the instructions that may be passed on (approved, or flagged), as of
        # the last review; absent: none may (not reviewed yet, or a change is held)
        self._instructions: dict[str, str] = {}

    def held_count(self) -> int:
        """Tools held out of lists right now, over every upstream still served with pinning on (as of each
        upstream's last list fetch). For /metrics: a dict walk, no database read."""
        return sum(self.held().values())

    def held(self) -> dict[str, int]:
        """Upstream id → tools held out of its list (upstreams holding none are left out)."""
        return {uid: n for uid, n in self._held.items() if n and self._mode_of(uid) is PinningMode.HOLD}

    def instructions_allowed(self, upstream_id: str, text: str) -> bool:
        """May these instructions of the upstream be passed on to clients? With pinning on, only the approved
        ones (or, flagged, those the last review saw): a changed text is held like a changed tool."""
        if self._mode_of(upstream_id) is PinningMode.OFF:
            return True
        return self._instructions.get(upstream_id) == fingerprint(instructions_entry(text))

    async def review(self, upstream_id: str, tools: list[JSON], instructions: str | None = None) -> list[JSON]:
        """`tools` as the upstream listed them → what the gateway serves: unchanged tools as they came, changed
        ones held out or flagged. New tools are approved (trust on first use) and changes recorded.
        `instructions`, the upstream's (from the session the list came from), are reviewed with them."""
        mode = self._mode_of(upstream_id)
        match mode:
            case PinningMode.OFF:
                self._held.pop(upstream_id, None)
                self._instructions.pop(upstream_id, None)
                return tools
            case PinningMode.HOLD | PinningMode.FLAG:
                pass
            case _:
                assert_never(mode)
        seen: dict[str, tuple[str, JSON]] = {}
        unpinnable: set[str] = set()
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str) or len(name) > NAME_LIMIT or name == INSTRUCTIONS:
                unpinnable.add(str(name)[:80])
                continue
            seen[name] = (fingerprint(tool), definition(tool))
        if instructions:
            entry = instructions_entry(instructions)
            seen[INSTRUCTIONS] = (fingerprint(entry), definition(entry))
        pins = await self._store.reconcile(upstream_id, seen, now=self._clock())
        for i, changed in enumerate(pins.newly_changed):
            self._record_change(upstream_id, changed, mode, logged=i < CHANGES_LOGGED)
        if pins.forgotten:
            log.warning(
                "upstream '%s': the pins of %d tool(s) it no longer lists were forgotten (the newest first seen, "
                "beyond those kept); such a tool, if brought back, is approved as new",
                upstream_id,
                pins.forgotten,
            )
        if len(pins.newly_changed) > CHANGES_LOGGED:
            log.warning(
                "%d more tools of upstream '%s' changed since they were approved "
                "(each audited; manifold tools diff %s)",
                len(pins.newly_changed) - CHANGES_LOGGED,
                upstream_id,
                upstream_id,
            )
        changed_names = {name for name, pin in pins.pins.items() if pin.pending_hash is not None and name in seen}
        out: list[JSON] = []
        held = 0
        self._instructions.pop(upstream_id, None)
        if INSTRUCTIONS in seen:
            if INSTRUCTIONS not in changed_names or mode is PinningMode.FLAG:
                self._instructions[upstream_id] = seen[INSTRUCTIONS][0]
            else:
                held += 1
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str) or name not in seen:
                # No pin can hold it: kept out in hold mode, flagged otherwise.
                if mode is PinningMode.HOLD:
                    held += 1
                    continue
                out.append(_flagged(tool, None))
                continue
            if name not in changed_names:
                out.append(tool)
                continue
            if mode is PinningMode.HOLD:
                held += 1
                continue
            out.append(_flagged(tool, pins.pins[name]))
        if unpinnable:
            log.warning(
                "upstream '%s' lists %d tool(s) without a pinnable name (missing or over %d characters): %s",
                upstream_id,
                len(unpinnable),
                NAME_LIMIT,
                "held" if mode is PinningMode.HOLD else "flagged",
            )
        self._held[upstream_id] = held
        return out

    def _record_change(self, upstream_id: str, pin: StoredPin, mode: PinningMode, *, logged: bool) -> None:
        what = "held until an admin approves it" if mode is PinningMode.HOLD else "flagged"
        seen = pin.pending_hash or ""
        if logged:
            log.warning(
                "%s of upstream '%s' changed since it was approved (sha256 %s → %s): %s (manifold tools diff %s %s)",
                "the instructions" if pin.tool == INSTRUCTIONS else f"tool '{pin.tool}'",
                upstream_id,
                pin.approved_hash[:12],
                seen[:12],
                what,
                upstream_id,
                f"'{pin.tool}'" if pin.tool == INSTRUCTIONS else pin.tool,  # '#' starts a shell comment
            )
        self._audit(
            AuditEvent(
                at=self._clock(),
                request_id=None,
                principal="gateway",
                credential="none",
                server="admin",
                member=None,
                upstream=upstream_id,
                method="tool changed",
                target=pin.tool[:400],
                outcome=Outcome.DENIED if mode is PinningMode.HOLD else Outcome.OK,
                detail=f"definition changed (sha256 {pin.approved_hash[:12]} → {seen[:12]}): {what}",
            )
        )


def _flagged(tool: JSON, pin: StoredPin | None) -> JSON:
    meta = tool.get("_meta")
    flag: JSON = (
        {"status": "unpinnable"}
        if pin is None
        else {"status": "changed", "approved": pin.approved_hash, "seen": pin.pending_hash}
    )
    return {**tool, "_meta": {**(meta if isinstance(meta, dict) else {}), META_KEY: flag}}
