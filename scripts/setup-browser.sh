#!/usr/bin/env bash
# Make sure Debian's Chromium is on the machine for the browser tests (tests/browser): Playwright for Python
# drives it through `executable_path`, never a browser build of its own (its download is not used here).
# Idempotent: returns at once when the binary is there.
#
#   scripts/setup-browser.sh                 # installs the Debian package `chromium` when it is missing
#   MANIFOLD_CHROMIUM=/path/to/chromium ...  # use another binary (the tests read the same variable)
set -euo pipefail

chromium="${MANIFOLD_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] && exit 0

if [[ -n "${MANIFOLD_CHROMIUM:-}" ]]; then
    echo "setup-browser: MANIFOLD_CHROMIUM=$chromium is not an executable file" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "setup-browser: no $chromium and no apt-get to install it; install Chromium and set MANIFOLD_CHROMIUM" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup-browser: installing chromium needs root (or sudo)" >&2; exit 1; }
    sudo="sudo"
fi
echo "setup-browser: installing Debian's chromium (once)"
# Parallel callers serialise on apt's own lock; -o DPkg::Lock::Timeout waits for it instead of failing.
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
[[ -x "$chromium" ]] || { echo "setup-browser: apt-get finished but $chromium is still missing" >&2; exit 1; }
