#!/usr/bin/env bash
# Create or refresh .venv: Python >= 3.11, the project installed editable with its test extra,
# every dependency pinned by constraints.txt (regenerate it with `make lock`).
#
# Idempotent and quick when nothing changed: a stamp records the hash of pyproject.toml and
# constraints.txt the venv was built from, so an unchanged tree costs two sha256sums.
#
#   scripts/bootstrap.sh                     # the fastest Python >= 3.11 found (see pick_python)
#   PYTHON=/usr/bin/python3.12 scripts/bootstrap.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
constraints="$root/constraints.txt"
stamp="$venv/.bootstrap.sha256"

# (A missing file is said below; under pipefail cat's failure here ended the script without a word.)
wanted="$({ cat "$root/pyproject.toml" "$constraints" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

is_new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# What the venv and the gateway need of the interpreter's standard library; prints the missing ones, or "-".
# (Debian's python3 has no ensurepip without python3-venv; a Python built without libsqlite3 or libssl headers
# has no sqlite3 or ssl.)
modules_probe='
missing = []
for name in ("venv", "ensurepip", "sqlite3", "ssl"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing) or "-")
'

# A short loop of the dict, string and call work the gateway's request path is made of, best of five;
# prints seconds. Used only to rank the interpreters this machine has.
speed_probe='
import time
def step(i):
    d = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "t" + str(i)}}
    return len(d.get("params", {}).get("name", "")) + isinstance(d["id"], int)
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    for i in range(60000):
        step(i)
    best = min(best, time.perf_counter() - t)
print(best)
'

# PYTHON wins when set. Otherwise every Python >= 3.11 on the machine that can make a venv is timed and the
# fastest taken: the gateway's CPU per call is interpreter-bound, and how an interpreter was built matters
# more than its version. A distribution's python3 (Debian's, built with PGO and LTO) runs the request path
# ~20% faster than a plain source build such as pyenv's default (bench/README.md, "The interpreter").
candidates=(python3 python3.13 python3.12 python3.11 /usr/bin/python3 /usr/local/bin/python3)
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        command -v "$PYTHON" >/dev/null && is_new_enough "$PYTHON" && { echo "$PYTHON"; return 0; }
        return 1
    fi
    # Each interpreter's answer is its last line of output: a sitecustomize or a .pth file may print before it.
    # (Plain arrays, no associative ones: macOS's /bin/bash is 3.2.)
    local candidate info real path seen=$'\n' missing version hint minor took i round best=""
    local -a usable=() versions=() times=()
    for candidate in "${candidates[@]}"; do
        command -v "$candidate" >/dev/null 2>&1 && is_new_enough "$candidate" || continue
        # The interpreter itself, not a launcher (pyenv's shims are scripts); one Python is timed once (its real
        # file), but the venv is made with the path it calls itself: a Homebrew Cellar path, say, goes away
        # at the next `brew upgrade` while /opt/homebrew/bin/python3.12 stays.
        info="$("$candidate" -c 'import os, sys; print(os.path.realpath(sys.executable)); print(sys.executable)' \
            2>/dev/null | tail -n 2)" || continue
        real="${info%%$'\n'*}"
        path="${info#*$'\n'}"
        [[ -x "$path" && -n "$real" && "$seen" != *$'\n'"$real"$'\n'* ]] || continue
        seen+="$real"$'\n'
        version="$("$path" --version 2>&1 | tail -n 1)"
        missing="$("$path" -c "$modules_probe" 2>/dev/null | tail -n 1)" || continue
        if [[ "$missing" != "-" ]]; then
            hint=""
            if [[ " $missing " == *" ensurepip "* || " $missing " == *" venv "* ]]; then
                minor="${version#Python }"
                hint="; on Debian and Ubuntu: apt-get install python${minor%.*}-venv"
            fi
            echo "bootstrap: not $path ($version): it has no ${missing// /, }$hint" >&2
            continue
        fi
        usable+=("$path")
        versions+=("$version")
        times+=("")
    done
    [[ ${#usable[@]} -gt 0 ]] || return 1
    # Timed in alternating rounds, each keeping its best: load elsewhere on the machine during one
    # interpreter's turn (a shared or busy machine) does not make it look the slower one.
    for round in 1 2 3; do
        for i in "${!usable[@]}"; do
            took="$("${usable[$i]}" -c "$speed_probe" 2>/dev/null | tail -n 1)" || continue
            [[ "$took" =~ ^[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$ ]] || continue
            if [[ -z "${times[$i]}" ]] || awk -v a="$took" -v b="${times[$i]}" 'BEGIN { exit !(a + 0 < b + 0) }'; then
                times[i]="$took"
            fi
        done
    done
    for i in "${!usable[@]}"; do
        [[ -n "${times[$i]}" ]] || continue
        echo "bootstrap: ${usable[$i]} (${versions[$i]}): ${times[$i]:0:6} s" >&2
        if [[ -z "$best" ]] || awk -v a="${times[$i]}" -v b="${times[$best]}" 'BEGIN { exit !(a + 0 < b + 0) }'; then
            best="$i"
        fi
    done
    [[ -n "$best" ]] && echo "${usable[$best]}"
}

# A venv made by an older Python (or a broken one) is rebuilt rather than patched.
if [[ -x "$venv/bin/python" ]] && ! is_new_enough "$venv/bin/python"; then
    echo "bootstrap: $venv has Python < 3.11; rebuilding it"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    if ! python="$(pick_python)"; then
        echo "bootstrap: needs Python 3.11 or newer, with venv, ensurepip, sqlite3 and ssl" \
            "(set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "bootstrap: creating $venv with $python ($("$python" --version 2>&1 | tail -n 1))"
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
