"""What the MCP fuzz tests share: a 2025-11-25 session per server (opened once, reopened only if it is gone),
the JSON-RPC messages in a reply (one JSON body or an event stream), and the id property."""

from __future__ import annotations

import json
from typing import Any

from manifold import protocol
from tests.fuzz.probe import Probe, Reply

ACCEPT_BOTH = "application/json, text/event-stream"
JSON_POST = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}


def initialize_body(version: str = protocol.LATEST_HANDSHAKE) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": protocol.INITIALIZE,
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
        }
    ).encode()


class Sessions:
    """One open 2025-11-25 session per server, as a well-behaved client holds it."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    async def get(self, probe: Probe, server: str) -> str:
        if server not in self.ids:
            reply = await probe.send(
                "mcp 2025-11-25", "POST", f"/mcp/{server}", headers=JSON_POST, data=initialize_body()
            )
            assert reply.status == 200, f"initialize on {server}: {reply.status} {reply.text[:500]}"
            self.ids[server] = reply.headers["mcp-session-id"]
        return self.ids[server]

    def forget(self, server: str) -> None:
        self.ids.pop(server, None)


async def end_new_session(probe: Probe, target: str, server: str, reply: Reply, ours: str | None) -> None:
    """A fuzzed `initialize` that opened a session: end it (DELETE), as a client would, so sessions do not
    pile up against the per-principal limit over thousands of examples."""
    sid = reply.headers.get("mcp-session-id")
    if sid and sid != ours:
        await probe.send(target, "DELETE", f"/mcp/{server}", headers={"Mcp-Session-Id": sid})


def messages(reply: Reply) -> list[Any]:
    """The JSON-RPC messages of a reply: its JSON body, or each `data:` of an event stream."""
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        found = []
        for event in reply.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:"))
            if data:
                try:
                    found.append(json.loads(data))
                except ValueError:
                    found.append(data)
        return found
    value = reply.json()
    return [] if value is None else [value]


def sent_message(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def assert_result_keeps_its_id(body: bytes, reply: Reply) -> None:
    """A result answers the request under exactly the id it was sent with (an integer stays an integer of the
    same value, however large; a string stays the same string)."""
    message = sent_message(body)
    if not isinstance(message, dict) or "id" not in message:
        return
    request_id = message["id"]
    if type(request_id) not in (int, str):
        return
    for answer in messages(reply):
        if isinstance(answer, dict) and "result" in answer:
            got = answer.get("id")
            assert type(got) is type(request_id) and got == request_id, (
                f"request id {_short(request_id)} answered as {_short(got)}"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "…"
