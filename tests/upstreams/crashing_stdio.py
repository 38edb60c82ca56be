"""A stdio MCP server (2025-11-25, raw newline-delimited JSON) that forks a helper inheriting its stdout, then
crashes in the middle of a `tools/call` of `crash` (exit code 3, one line on stderr). The helper keeps the
gateway's stdout pipe open after the command died: its death must be seen all the same (upstream/stdio.py).

    python tests/upstreams/crashing_stdio.py HELPER_PID_FILE

Tools: `echo` (a well-formed result), `crash` (dies without answering).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

out = sys.stdout.buffer


def write(message: object) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def main() -> None:
    helper = os.fork()
    if helper == 0:  # the helper: holds stdin, stdout and stderr, as inherited, and does nothing for a while
        time.sleep(120)
        os._exit(0)
    Path(sys.argv[1]).write_text(str(helper))
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or "id" not in message or "method" not in message:
            continue
        request_id, method = message["id"], message["method"]
        if method == "initialize":
            hello = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "crashing"}}
            write({"jsonrpc": "2.0", "id": request_id, "result": hello})
        elif method == "tools/list":
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("echo", "crash")]
            write({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            if (message.get("params") or {}).get("name") == "crash":
                sys.stderr.write("segfault in the frobnicator\n")
                sys.stderr.flush()
                os._exit(3)
            result = {"content": [{"type": "text", "text": "fine"}]}
            write({"jsonrpc": "2.0", "id": request_id, "result": result})
        else:
            write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "unknown method"}})


if __name__ == "__main__":
    main()
