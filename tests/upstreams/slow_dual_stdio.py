"""A stdio MCP server slow to start (it reads nothing until the file argv[1] exists, as `npx -y pkg` fetching its
package does) that speaks both eras without tying the connection to the first one asked: it answers
`server/discover` (2026-07-28) and `initialize` (2025-11-25) alike, then `tools/list` and `tools/call` (`echo`).
Raw newline-delimited JSON. For protocol `auto`'s probe (upstream/session.py `_probe`): a start is not taken for
a server that ignores the probe, so its era is the one its first answer says."""

import json
import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
while not gate.exists():  # fetching its package
    time.sleep(0.02)

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}
CAPABILITIES = {"tools": {}}
for line in sys.stdin:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if request_id is None:
        continue
    if method == "server/discover":
        result = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": CAPABILITIES,
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "dual", "version": "1"}},
        }
    elif method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": CAPABILITIES, "serverInfo": {"name": "dual"}}
    elif method == "tools/list":
        result = {"tools": [ECHO]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "hi"}]}
    else:
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}), flush=True)
