#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are on the machine for the tests that run on PostgreSQL
# (tests/postgres.py starts a throw-away cluster from them: initdb + pg_ctl in a temporary directory, as an
# unprivileged user, on a loopback port; the package's own cluster and service are not used).
# Idempotent: returns at once when initdb is there.
#
#   scripts/setup-postgres.sh      # installs the Debian package `postgresql` when it is missing
set -euo pipefail

compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && exit 0
command -v initdb >/dev/null && exit 0

if ! command -v apt-get >/dev/null; then
    echo "setup-postgres: no PostgreSQL server (initdb) and no apt-get to install it; install PostgreSQL 13+" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup-postgres: installing postgresql needs root (or sudo)" >&2; exit 1; }
    sudo="sudo"
fi
echo "setup-postgres: installing Debian's postgresql (once)"
# Parallel callers serialise on apt's own lock; -o DPkg::Lock::Timeout waits for it instead of failing.
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || { echo "setup-postgres: apt-get finished but initdb is still missing" >&2; exit 1; }
