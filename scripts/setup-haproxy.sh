#!/usr/bin/env bash
# Make sure Debian's HAProxy is on the machine for the replica tests (tests/replicas): they start two or more
# gateway processes on one database and a real load balancer in front of them (`haproxy -f cfg -db`, a child
# process of the test, loopback only). Idempotent: returns at once when the binary is there.
#
#   scripts/setup-haproxy.sh                # installs the Debian package `haproxy` when it is missing
#   MANIFOLD_HAPROXY=/path/to/haproxy ...   # use another binary (the tests read the same variable)
set -euo pipefail

haproxy="${MANIFOLD_HAPROXY:-}"
if [[ -n "$haproxy" ]]; then
    [[ -x "$haproxy" ]] && exit 0
    echo "setup-haproxy: MANIFOLD_HAPROXY=$haproxy is not an executable file" >&2
    exit 1
fi
command -v haproxy >/dev/null && exit 0
[[ -x /usr/sbin/haproxy ]] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "setup-haproxy: no haproxy and no apt-get to install it; install HAProxy and set MANIFOLD_HAPROXY" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup-haproxy: installing haproxy needs root (or sudo)" >&2; exit 1; }
    sudo="sudo"
fi
echo "setup-haproxy: installing Debian's haproxy (once)"
# Parallel callers serialise on apt's own lock; -o DPkg::Lock::Timeout waits for it instead of failing.
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends haproxy >/dev/null
[[ -x /usr/sbin/haproxy ]] || { echo "setup-haproxy: apt-get finished but /usr/sbin/haproxy is still missing" >&2; exit 1; }
