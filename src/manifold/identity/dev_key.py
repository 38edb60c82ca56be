"""The development key of the embedded default: the admin key `make run` prints.

The key is generated once per state dir and kept in `<state_dir>/dev-key` (mode 0600) so that `make run`
can print it again and client configs survive a restart; the database holds only its SHA-256 (as the API
key with id `dev`, owned by user `dev`, always an admin: identity/api_keys.py, policy/admins.py).
`MANIFOLD_DEV_KEY` overrides it (tests use that).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from manifold.identity.api_keys import DEV_PREFIX

ENV_VAR = "MANIFOLD_DEV_KEY"


def load_or_create(state_dir: Path) -> str:
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return from_env
    path = state_dir / "dev-key"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = DEV_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
