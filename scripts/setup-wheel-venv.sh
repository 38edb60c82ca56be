#!/usr/bin/env bash
# The clean venv of the packaging test (tests/packaging/test_wheel.py): the wheel built from the work tree,
# installed with `pip install <wheel> -c constraints.txt` into a fresh `python -m venv` outside the
# repository (~/.cache/manifold-packaging/venv-<hash of the dependencies>), from the package registry.
# A `make test` prerequisite, so the test itself needs no index; idempotent: when the venv for the current
# constraints.txt and [project] dependencies exists, it returns at once (tests/packaging/wheelenv.py).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exec "$root/.venv/bin/python" -m tests.packaging.wheelenv
