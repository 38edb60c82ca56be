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

up_to_date() { [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; }
up_to_date && exit 0

# Parallel test workers may all call this at once: one builds, the others wait, then find
# it up to date.
lock="${TMPDIR:-/tmp}/manifold-venv-legacy-$(printf '%s' "$root" | sha256sum | cut -c1-16).lock"
exec 9>"$lock"
flock 9
up_to_date && exit 0

# Default to the interpreter behind the project venv, so both venvs share one Python.
default_python=python3
[[ -x "$root/.venv/bin/python" ]] && default_python="$root/.venv/bin/python"
python="${PYTHON:-$default_python}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# Fail here, not in a test, if the SDK does not import.
"$venv/bin/python" -c "import mcp.server.fastmcp"
echo "$wanted" > "$stamp"
echo "created $venv ($("$venv/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'))"
