#!/usr/bin/env bash
# `make run`: the demo toolbox upstream (streamable HTTP, 127.0.0.1:8471) in the background, then
# `manifold serve` on the given config in the foreground. The toolbox is stopped when the gateway exits
# (Ctrl-C included). Expects .venv to exist (scripts/bootstrap.sh).
#
#   scripts/run-demo.sh [manifold.yaml]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
config="${1:-manifold.yaml}"
py="$root/.venv/bin/python"
toolbox_port="${TOOLBOX_PORT:-8471}"

# Exit status 0 when something on 127.0.0.1:$1 accepts connections.
port_in_use() {
    "$py" - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.3).close()
except OSError:
    sys.exit(1)
PY
}

# The gateway's port as the config sets it (8470 when it does not), for a clear message up front.
gateway_port="$("$py" - "$config" <<'PY'
import sys, yaml
try:
    data = yaml.safe_load(open(sys.argv[1])) or {}
    print(int((data.get("gateway") or {}).get("port", 8470)))
except Exception:
    print(8470)
PY
)"

for pair in "toolbox:$toolbox_port" "gateway:$gateway_port"; do
    name="${pair%%:*}" port="${pair##*:}"
    if port_in_use "$port"; then
        echo "make run: port $port (the $name's) is already in use on 127.0.0.1." >&2
        echo "  Stop whatever listens there (e.g. 'ss -ltnp | grep :$port'), or a 'make run' still running." >&2
        exit 1
    fi
done

toolbox_pid=""
gateway_pid=""
# Stop both children: the gateway first (it closes its upstream sessions), then the toolbox. Background
# jobs of a non-interactive shell ignore SIGINT, so each is sent SIGTERM (Ctrl-C in a terminal reaches the
# gateway anyway: it is in the foreground process group).
stop_children() {
    local pid
    for pid in "$gateway_pid" "$toolbox_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
# Ctrl-C or SIGTERM is how `make run` is meant to end: once the children are stopped, exit 0, so make
# reports no error (it printed "make: *** Error 143" when this script exited with the signal's status).
stop_and_exit() {
    trap '' INT TERM  # a second signal (make passes its own on to this script) must not cut the stop short
    stop_children
    exit 0
}
trap stop_children EXIT
trap stop_and_exit INT TERM

"$py" -m manifold.demo.toolbox --port "$toolbox_port" &
toolbox_pid=$!

# Poll until the toolbox listens (or dies), so the gateway's first tools/list finds it.
deadline=$((SECONDS + 20))
until port_in_use "$toolbox_port"; do
    if ! kill -0 "$toolbox_pid" 2>/dev/null; then
        echo "make run: the demo toolbox exited before listening on port $toolbox_port" >&2
        exit 1
    fi
    if (( SECONDS > deadline )); then
        echo "make run: the demo toolbox did not listen on port $toolbox_port within 20 s" >&2
        exit 1
    fi
    sleep 0.1
done
echo "demo toolbox upstream: http://127.0.0.1:$toolbox_port/mcp (pid $toolbox_pid)"

# Not `exec`: this shell must outlive the gateway to stop the toolbox. `wait` lets the traps run
# as soon as a signal arrives.
"$py" -m manifold.cli --config "$config" serve &
gateway_pid=$!
status=0
wait "$gateway_pid" || status=$?
# uvicorn ends by raising the signal it was stopped with again: a gateway stopped by SIGINT or SIGTERM
# (Ctrl-C reaches it directly) ended as asked, not with an error.
if (( status == 130 || status == 143 )); then
    status=0
fi
exit "$status"
