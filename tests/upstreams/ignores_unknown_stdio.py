"""A stdio MCP server of the 2025-11-25 era that ignores requests whose method it does not know (no -32601, no
answer at all), as some hand-written servers and older SDKs do: it answers only `initialize`, `tools/list` and
`tools/call` (one tool, `echo`). For upstream/session.py's handshake under protocol `auto`."""

import json
import sys

ECHO = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}

for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    method = message.get("method")
    if method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "old"}}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
    elif method == "tools/list":
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [ECHO]}}), flush=True)
    elif method == "tools/call":
        text = str(((message.get("params") or {}).get("arguments") or {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text}]}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
