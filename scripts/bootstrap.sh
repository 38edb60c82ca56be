#!/usr/bin/env bash
# Create or refresh .venv: Python >= 3.11, the project installed editable with its test extra,
# every dependency pinned by constraints.txt (regenerate it with `make lock`).
#
# Idempotent and quick when nothing changed: a stamp records the hash of pyproject.toml and
# constraints.txt the venv was built from, so an unchanged tree costs two sha256sums.
#
#   scripts/bootstrap.sh                     # python3 from PATH (or python3.13/3.12/3.11)
#   PYTHON=/usr/bin/python3.12 scripts/bootstrap.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
constraints="$root/constraints.txt"
stamp="$venv/.bootstrap.sha256"

wanted="$(cat "$root/pyproject.toml" "$constraints" 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

is_new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null && is_new_enough "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# A venv made by an older Python (or a broken one) is rebuilt rather than patched.
if [[ -x "$venv/bin/python" ]] && ! is_new_enough "$venv/bin/python"; then
    echo "bootstrap: $venv has Python < 3.11; rebuilding it"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    if ! python="$(pick_python)"; then
        echo "bootstrap: needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "bootstrap: creating $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi

if [[ ! -f "$constraints" ]]; then
    echo "bootstrap: $constraints is missing; run 'make lock' in a working venv" >&2
    exit 1
fi

echo "bootstrap: installing the project and its test tools (pinned by constraints.txt)"
# This machine's pip config names an extra local index that may be absent; pip warns about it once per
# package. Those lines are dropped; everything else pip says, and its exit status, come through.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$constraints" -e "$root[test]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
# Fail here, not in the first test, if the install is unusable.
"$venv/bin/python" -c "import manifold.cli, mcp, fastmcp, pytest, xdist"
echo "$wanted" > "$stamp"
echo "bootstrap: $venv ready ($("$venv/bin/python" --version))"
