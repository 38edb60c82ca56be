"""Hostile over stdio: a raw MCP server (2025-11-25, newline-delimited JSON, no SDK) that answers `tools/call`
in the ways a broken or malicious local command can, chosen by the tool's name. For the gateway's
hostile-upstream tests (tests/integration/test_hostile_upstream.py).

    python tests/upstreams/hostile_stdio.py [--starts FILE] [--exit-after-handshake]

--starts FILE: append a line to FILE each time the process starts. --exit-after-handshake: exit (code 4, one
line on stderr) as soon as the handshake is done, as a crash-looping command does.

Tools:
  echo        a well-formed result
  huge_line   40 MB on stdout without a newline (past the gateway's 32 MB line bound), then it waits
  garbage     binary garbage and non-JSON lines on stdout, then the reply
  deep        a line nested 5,000 arrays deep (past any JSON parser's depth limit), then the reply
  deaf        replies, then never reads its stdin again (alive, hung)
  deep_reply  its reply nested 5,000 levels deep inside the result (past any JSON parser's depth limit)
  null_error  a JSON-RPC parse error with a null id instead of the reply
"""

from __future__ import annotations

import json
import sys
import threading

TOOLS = ["echo", "huge_line", "garbage", "deep", "deaf", "deep_reply", "null_error"]
out = sys.stdout.buffer


def write(message: object) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def result(request_id: object, text: str) -> None:
    write({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}})


def main() -> None:
    args = sys.argv[1:]
    if "--starts" in args:
        with open(args[args.index("--starts") + 1], "a") as starts:
            starts.write("started\n")
    exit_after_handshake = "--exit-after-handshake" in args
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if exit_after_handshake and isinstance(message, dict) and message.get("method") == "notifications/initialized":
            sys.stderr.write("exiting right after the handshake\n")
            sys.exit(4)
        if not isinstance(message, dict) or "id" not in message or "method" not in message:
            continue
        request_id, method = message["id"], message["method"]
        if method == "initialize":
            hello = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile"}}
            write({"jsonrpc": "2.0", "id": request_id, "result": hello})
        elif method == "tools/list":
            tools = [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]
            write({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            name = (message.get("params") or {}).get("name")
            if name == "huge_line":
                block = b"A" * (1024 * 1024)
                for _ in range(40):
                    out.write(block)
                out.flush()
            elif name == "garbage":
                out.write(b"\x00\xff\xfe garbage \x80\n" + b"not json at all\n" + b'{"unterminated": \n')
                result(request_id, "after the garbage")
            elif name == "deaf":
                result(request_id, "deaf now")
                threading.Event().wait()  # hung: alive, reading nothing
            elif name == "deep_reply":
                head = json.dumps({"jsonrpc": "2.0", "id": request_id})[:-1].encode()
                out.write(head + b', "result": {"content": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}}\n")
                out.flush()
            elif name == "null_error":
                write({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            elif name == "deep":
                out.write(b"[" * 5000 + b"]" * 5000 + b"\n")
                result(request_id, "after the deep line")
            else:
                result(request_id, "fine")
        else:
            write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
