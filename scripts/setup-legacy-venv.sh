#!/usr/bin/env bash
# Create .venv-legacy: a virtualenv holding the mcp 1.x SDK, for the handshake-era test
# upstream tests/upstreams/legacy_server.py. Idempotent: when the venv already holds exactly
# what tests/upstreams/requirements-legacy.txt asks for, it returns at once.
#
#   scripts/setup-legacy-venv.sh            # uses python3 from PATH
#   PYTHON=/usr/bin/python3.11 scripts/setup-legacy-venv.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-legacy"
requirements="$root/tests/upstreams/requirements-legacy.txt"
# The stamp records the hash of the requirements the venv was built from, so an edited
# pin rebuilds it and an unchanged one costs a single sha256sum.
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

python="${PYTHON:-python3}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# Fail here, not in a test, if the SDK does not import.
"$venv/bin/python" -c "import mcp.server.fastmcp"
echo "$wanted" > "$stamp"
echo "created $venv ($("$venv/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'))"
