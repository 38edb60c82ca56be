"""A stdio MCP server (2025-11-25, raw newline-delimited JSON) that closes its stdin once the handshake is done
and keeps running (sleeps), so it can read no further message: for upstream/stdio.py, whose writes to it must
fail at once, not wait out call_timeout (under uvloop they did not fail: the child held second copies of its
stdin)."""

import json
import os
import sys
import time

for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        hello = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "closer"}}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": hello}), flush=True)
    elif message.get("method") == "notifications/initialized":
        break
os.close(0)
sys.stderr.write("stdin closed\n")
sys.stderr.flush()
time.sleep(120)
